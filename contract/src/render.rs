//! Plans and reports as text for people: the agent's own commands and the `freezeframe` CLI
//! (which gets them over D-Bus and reads them back into the same types) print them the same way.

use crate::plan::{DatabaseDetection, DryRun, SnapshotPlan};
use crate::report::{Report, Status};
use std::fmt::Write;

/// A plan as text.
pub fn plan(plan: &SnapshotPlan) -> String {
    let mut out = String::new();
    let max = plan.max_freeze;
    let _ = writeln!(
        out,
        "Would freeze, in this order (thawed in reverse), for at most {}:",
        humantime::format_duration(max)
    );
    for (i, t) in plan.freeze_order.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {}  ({}, {})",
            i + 1,
            t.mountpoint.display(),
            t.fstype,
            t.source
        );
    }
    if plan.freeze_order.is_empty() {
        out.push_str("  nothing\n");
    }
    if !plan.skipped.is_empty() {
        out.push_str("Skipped:\n");
        for s in &plan.skipped {
            let _ = writeln!(out, "  {}  ({}): {}", s.mountpoint.display(), s.fstype, s.reason);
        }
    }
    databases(&mut out, &plan.databases);
    if plan.quiesce.is_empty() {
        out.push_str("Would quiesce: nothing (filesystem-consistent)\n");
    } else {
        out.push_str("Would quiesce, in this order (resumed in reverse):\n");
        for q in &plan.quiesce {
            let _ = writeln!(out, "  {q}");
        }
    }
    let _ = writeln!(out, "Provider: {}", plan.provider);
    out
}

fn databases(out: &mut String, detection: &DatabaseDetection) {
    if !detection.enabled {
        out.push_str("Database units: not detected (quiesce.auto = false)\n");
    } else if let Some(e) = &detection.systemd {
        let _ = writeln!(out, "Database units: none detected ({e})");
    } else if let Some(e) = &detection.error {
        let _ = writeln!(out, "Database units: detection FAILED: {e}");
    } else {
        let units = detection.units.as_deref().unwrap_or_default();
        if units.is_empty() {
            out.push_str("Database units: none active\n");
        } else {
            out.push_str("Database units:\n");
            for u in units {
                let how = match &u.note {
                    Some(why) => format!("NOT quiesced: {why}"),
                    None => u.handled_by.clone(),
                };
                let _ = writeln!(out, "  {} (pid {}): {how}", u.unit, u.main_pid);
            }
        }
    }
}

/// A dry run as both programs print it: the plan, then preflight's verdict and warnings.
pub fn dry_run(dry_run: &DryRun) -> String {
    let mut out = plan(&dry_run.plan);
    let preflight = &dry_run.preflight;
    match &preflight.error {
        None => out.push_str("Preflight: passed (a snapshot now would go ahead)\n"),
        Some(e) => {
            let _ = writeln!(
                out,
                "Preflight: a snapshot now would FAIL (exit {}): {e}",
                preflight.exit
            );
        }
    }
    for w in &preflight.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}

/// A snapshot report as text.
pub fn report(report: &Report) -> String {
    let mut out = String::new();
    let consistency = report
        .consistency
        .map(|c| format!(" ({}-consistent)", c.as_str()))
        .unwrap_or_default();
    let verdict = if report.status == Status::Succeeded {
        "succeeded"
    } else {
        "FAILED"
    };
    let name = match report.snapshot_name.as_str() {
        "" => String::new(),
        name => format!(" {name}"),
    };
    let _ = writeln!(out, "snapshot{name} {verdict}{consistency}");
    if let Some(e) = &report.error {
        match report.failed_phase {
            Some(phase) => {
                let _ = writeln!(out, "  error in {phase}: {e}");
            }
            None => {
                let _ = writeln!(out, "  error: {e}");
            }
        }
    }
    if let Some(id) = &report.action_id {
        let _ = writeln!(out, "  {} request: {id}", report.provider);
    }
    if let Some(id) = &report.snapshot_id {
        let _ = writeln!(out, "  snapshot: {id}");
    }
    if let Some(place) = &report.location {
        let _ = writeln!(out, "  stored in {place}");
    }
    for p in &report.pruned {
        let _ = writeln!(out, "  deleted old snapshot {} ({})", p.id, p.name);
    }
    let frozen: Vec<String> = report
        .filesystems
        .frozen
        .iter()
        .map(|t| t.mountpoint.display().to_string())
        .collect();
    if !frozen.is_empty() {
        let _ = writeln!(
            out,
            "  writes blocked for {:.1} ms (freezing {:.1} ms, request {:.1} ms, thawing {:.1} ms) on {}",
            report.frozen_ms,
            report.freezing_ms,
            report.request_ms,
            report.thawing_ms,
            frozen.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  quiesce {:.1} ms, sync {:.1} ms, resume {:.1} ms, total {:.1} ms",
        report.quiesce_ms, report.sync_ms, report.resume_ms, report.total_ms
    );
    for w in &report.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    out
}
