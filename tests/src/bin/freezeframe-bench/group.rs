//! Part 6 of the benchmark: consistency groups (`freezeframe -H … snapshot --group`) of 2 to 50
//! simulated Droplets (agents on private buses, each with its own API simulator, as in the
//! fleet part). Per run: each member's frozen window, the slowest member's request (its API
//! round trip), what the group's barriers add on top of that, and the overlap window in which
//! every member was frozen (the coordinator's bound).

use crate::scaling::Behind;
use crate::{median_max, percentile, Args, Section};
use freezeframe_tests::*;
use serde_json::{json, Value};
use std::process::Command;

pub fn run(args: &Args) -> Section {
    let most = args.group.iter().copied().max().unwrap_or(2);
    let Behind { names, ssh, .. } = &Behind::ssh(most, "member", args.latency);
    let mut section = Section::new(
        format!(
            "Consistency groups (`freezeframe -H … snapshot --group`), {} groups each",
            args.runs
        ),
        vec![
            "members",
            "member's frozen window ms (median / max)",
            "slowest request ms (median / max)",
            "window − slowest request ms (median / max)",
            "overlap window ms (median / min)",
            "group wall time ms (median / max)",
        ],
    );
    for &n in &args.group {
        let (mut windows, mut slowest, mut added, mut overlaps, mut walls) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut cmd = Command::new(cli_bin());
            // Each member has a simulator and a token of its own: nothing to pace.
            cmd.args([
                "--ssh-command",
                ssh.to_str().unwrap(),
                "--parallel",
                "50",
                "--api-rate",
                "1000000",
            ]);
            for name in &names[..n] {
                cmd.args(["-H", name]);
            }
            cmd.args(["snapshot", "--group", "--json"]);
            let started = std::time::Instant::now();
            let out = cmd.output().unwrap();
            walls.push(crate::ms(started));
            let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            assert!(
                out.status.success() && result["consistent"] == true,
                "group of {n}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let members = result["members"].as_array().unwrap();
            let field = |key: &str| -> Vec<f64> {
                members
                    .iter()
                    .map(|m| m["report"][key].as_f64().unwrap_or_default())
                    .collect()
            };
            let frozen = field("frozen_ms");
            let slowest_request = field("request_ms").into_iter().fold(0.0, f64::max);
            let widest = frozen.iter().copied().fold(0.0, f64::max);
            windows.extend(frozen);
            slowest.push(slowest_request);
            added.push(widest - slowest_request);
            overlaps.push(result["overlap_ms"].as_f64().unwrap_or_default());
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        section.rows.push(vec![
            n.to_string(),
            median_max(&windows),
            median_max(&slowest),
            median_max(&added),
            format!("{:.1} / {:.1}", percentile(&overlaps, 50.0), min(&overlaps)),
            median_max(&walls),
        ]);
        section.json.push(json!({
            "members": n, "runs": args.runs,
            "member_window_ms_median": percentile(&windows, 50.0),
            "member_window_ms_max": percentile(&windows, 100.0),
            "slowest_request_ms_median": percentile(&slowest, 50.0),
            "added_ms_median": percentile(&added, 50.0),
            "added_ms_max": percentile(&added, 100.0),
            "overlap_ms_median": percentile(&overlaps, 50.0),
            "overlap_ms_min": min(&overlaps),
            "wall_ms_median": percentile(&walls, 50.0),
        }));
    }
    section.notes.push(
        "The window of each member runs from its own first FIFREEZE to its last FITHAW: it waits \
         frozen for the slowest member to freeze (one bus round trip to the coordinator and back), \
         then for its own request. \"window − slowest request\" is what the barriers add to the \
         widest window of each group, over the slowest API round trip of that group; the overlap \
         is the interval in which the coordinator knows every member was frozen."
            .into(),
    );
    section
}
