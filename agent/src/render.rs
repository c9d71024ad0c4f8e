//! Plans and reports as text for people, from their JSON form: the agent's own commands and the
//! `freezeframe` CLI (which gets them over D-Bus) print them the same way.

use serde_json::Value;
use std::fmt::Write;

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A plan (`job::plan_json`) as text.
pub fn plan(plan: &Value) -> String {
    let mut out = String::new();
    let max = std::time::Duration::from_millis(plan["max_freeze_ms"].as_u64().unwrap_or(0));
    let _ = writeln!(
        out,
        "Would freeze, in this order (thawed in reverse), for at most {}:",
        humantime::format_duration(max)
    );
    let targets = plan["freeze_order"].as_array().cloned().unwrap_or_default();
    for (i, t) in targets.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {}  ({}, {})",
            i + 1,
            text(&t["mountpoint"]),
            text(&t["fstype"]),
            text(&t["source"])
        );
    }
    if targets.is_empty() {
        out.push_str("  nothing\n");
    }
    if let Some(skipped) = plan["skipped"].as_array().filter(|s| !s.is_empty()) {
        out.push_str("Skipped:\n");
        for s in skipped {
            let _ = writeln!(
                out,
                "  {}  ({}): {}",
                text(&s["mountpoint"]),
                text(&s["fstype"]),
                text(&s["reason"])
            );
        }
    }
    let db = &plan["databases"];
    if db["enabled"] == false {
        out.push_str("Database units: not detected (quiesce.auto = false)\n");
    } else if let Some(e) = db["systemd"].as_str() {
        let _ = writeln!(out, "Database units: none detected ({e})");
    } else if let Some(e) = db["error"].as_str() {
        let _ = writeln!(out, "Database units: detection FAILED: {e}");
    } else {
        let units = db["units"].as_array().cloned().unwrap_or_default();
        if units.is_empty() {
            out.push_str("Database units: none active\n");
        } else {
            out.push_str("Database units:\n");
            for u in units {
                let how = match u["note"].as_str() {
                    Some(why) => format!("NOT quiesced: {why}"),
                    None => text(&u["handled_by"]).to_string(),
                };
                let _ = writeln!(out, "  {} (pid {}): {how}", text(&u["unit"]), u["main_pid"]);
            }
        }
    }
    let quiesce = plan["quiesce"].as_array().cloned().unwrap_or_default();
    if quiesce.is_empty() {
        out.push_str("Would quiesce: nothing (filesystem-consistent)\n");
    } else {
        out.push_str("Would quiesce, in this order (resumed in reverse):\n");
        for q in quiesce {
            let _ = writeln!(out, "  {}", text(&q));
        }
    }
    let _ = writeln!(out, "Provider: {}", text(&plan["provider"]));
    out
}

/// A snapshot report (`transaction::Report` as JSON) as text.
pub fn report(report: &Value) -> String {
    let mut out = String::new();
    let consistency = report["consistency"]
        .as_str()
        .map(|c| format!(" ({c}-consistent)"))
        .unwrap_or_default();
    let verdict = if report["status"] == "succeeded" {
        "succeeded"
    } else {
        "FAILED"
    };
    let _ = writeln!(
        out,
        "snapshot {} {verdict}{consistency}",
        text(&report["snapshot_name"])
    );
    if let Some(e) = report["error"].as_str() {
        let _ = writeln!(out, "  error in {}: {e}", text(&report["failed_phase"]));
    }
    if let Some(id) = report["action_id"].as_str() {
        let _ = writeln!(out, "  {} request: {id}", text(&report["provider"]));
    }
    if let Some(id) = report["snapshot_id"].as_str() {
        let _ = writeln!(out, "  snapshot: {id}");
    }
    for p in report["pruned"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  deleted old snapshot {} ({})",
            text(&p["id"]),
            text(&p["name"])
        );
    }
    let frozen: Vec<&str> = report["filesystems"]["frozen"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| text(&t["mountpoint"]))
        .collect();
    let ms = |key: &str| report[key].as_f64().unwrap_or(0.0);
    if !frozen.is_empty() {
        let _ = writeln!(
            out,
            "  writes blocked for {:.1} ms (freezing {:.1} ms, request {:.1} ms, thawing {:.1} ms) on {}",
            ms("frozen_ms"),
            ms("freezing_ms"),
            ms("request_ms"),
            ms("thawing_ms"),
            frozen.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  quiesce {:.1} ms, sync {:.1} ms, resume {:.1} ms, total {:.1} ms",
        ms("quiesce_ms"),
        ms("sync_ms"),
        ms("resume_ms"),
        ms("total_ms")
    );
    for w in report["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  warning: {}", text(w));
    }
    out
}
