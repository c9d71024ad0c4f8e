//! Part 6 of the benchmark: consistency groups (`freezeframe -H … snapshot --group`) of 2 to 50
//! simulated Droplets (agents on private buses, each with its own API simulator, as in the
//! fleet part). Per run: each member's frozen window, the slowest member's request (its API
//! round trip), what the group's barriers add on top of that (split into the spread of the
//! members' freezes and the round trip to the coordinator), and the overlap window in which
//! every member was frozen (the coordinator's bound).
//!
//! Every member here shares one kernel, whose `rcu_expedited` knob is system-wide: the agent
//! that holds it expedites the grace periods of every FIFREEZE running then, and the others,
//! finding it taken, leave it alone; freezes that start after it was put back wait for normal
//! grace periods. On Droplets each member expedites its own kernel. So each size is measured
//! twice: as it falls here, and with the knob held at 1 for the run, as if each member had
//! its own.

use crate::record::{GroupRun, Recorded};
use crate::scaling::Behind;
use crate::{median_max, percentile, Args, Section};
use freezeframe_tests::*;
use serde_json::{json, Value};
use std::process::Command;

const RCU_KNOB: &str = "/sys/kernel/rcu_expedited";

pub fn run(args: &Args, records: &mut Recorded) -> Section {
    let most = args.group.iter().copied().max().unwrap_or(2);
    let behind = Behind::ssh(most, "member", args.latency);
    let mut section = Section::new(
        format!(
            "Consistency groups (`freezeframe -H … snapshot --group`), {} groups each",
            args.runs
        ),
        vec![
            "members",
            "grace periods expedited",
            "member's frozen window ms (median / max)",
            "slowest request ms (median / max)",
            "window − slowest request ms (median / max)",
            "of which freeze spread ms (median / max)",
            "of which round trip ms (median / max)",
            "overlap window ms (median / min)",
            "group wall time ms (median / max)",
        ],
    );
    for &n in &args.group {
        for own_kernel in [false, true] {
            let _held = own_kernel.then(RcuHeld::expedite);
            let m = measure(&behind, n, args.runs);
            records
                .groups
                .extend(m.runs.iter().map(|(windows_ms, slowest_request_ms)| GroupRun {
                    members: n,
                    rcu_knob_held: own_kernel,
                    windows_ms: windows_ms.clone(),
                    slowest_request_ms: *slowest_request_ms,
                }));
            let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let mode = if own_kernel {
                "by each member (knob held)"
            } else {
                "by one member at a time (shared knob)"
            };
            section.rows.push(vec![
                n.to_string(),
                mode.into(),
                median_max(&m.windows),
                median_max(&m.slowest),
                median_max(&m.added),
                median_max(&m.spreads),
                median_max(&m.round_trips),
                format!("{:.1} / {:.1}", percentile(&m.overlaps, 50.0), min(&m.overlaps)),
                median_max(&m.walls),
            ]);
            section.json.push(json!({
                "members": n, "runs": args.runs, "rcu_knob_held": own_kernel,
                "member_window_ms_median": percentile(&m.windows, 50.0),
                "member_window_ms_max": percentile(&m.windows, 100.0),
                "slowest_request_ms_median": percentile(&m.slowest, 50.0),
                "added_ms_median": percentile(&m.added, 50.0),
                "added_ms_max": percentile(&m.added, 100.0),
                "freeze_spread_ms_median": percentile(&m.spreads, 50.0),
                "round_trip_ms_median": percentile(&m.round_trips, 50.0),
                "overlap_ms_median": percentile(&m.overlaps, 50.0),
                "overlap_ms_min": min(&m.overlaps),
                "wall_ms_median": percentile(&m.walls, 50.0),
            }));
        }
    }
    section.notes.push(
        "The window of each member runs from its own first FIFREEZE to its last FITHAW: it waits \
         frozen for the slowest member to freeze (one bus round trip to the coordinator and back), \
         then for its own request. \"window − slowest request\" is what the barriers add to the \
         widest window of each group, over the slowest API round trip of that group: the spread \
         of the members' freezes (how much longer the first to freeze waited than the last) and \
         the round trip of the last one's word to the coordinator and of the commit back; the \
         rest is the commit reaching members one after another. The overlap is the interval in \
         which the coordinator knows every member was frozen."
            .into(),
    );
    section
}

/// What the groups of one size gave.
#[derive(Default)]
struct Measured {
    windows: Vec<f64>,
    slowest: Vec<f64>,
    added: Vec<f64>,
    spreads: Vec<f64>,
    round_trips: Vec<f64>,
    overlaps: Vec<f64>,
    walls: Vec<f64>,
    /// Each run's members' windows and its slowest request.
    runs: Vec<(Vec<f64>, f64)>,
}

/// `runs` group snapshots of the first `n` Droplets behind the stand-in ssh.
fn measure(behind: &Behind, n: usize, runs: usize) -> Measured {
    let mut m = Measured::default();
    for _ in 0..runs {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut cmd = Command::new(cli_bin());
        // Each member has a simulator and a token of its own: nothing to pace.
        cmd.args([
            "--ssh-command",
            behind.ssh.to_str().unwrap(),
            "--parallel",
            "50",
            "--api-rate",
            "1000000",
        ]);
        for name in &behind.names[..n] {
            cmd.args(["-H", name]);
        }
        cmd.args(["snapshot", "--group", "--json"]);
        let started = std::time::Instant::now();
        let out = cmd.output().unwrap();
        m.walls.push(crate::ms(started));
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
        // How long each waited frozen for the commit: the last to freeze waited only for its
        // word to reach the coordinator and the commit to come back.
        let held: Vec<f64> = members
            .iter()
            .map(|m| m["report"]["group"]["held_ms"].as_f64().unwrap_or_default())
            .collect();
        let least = held.iter().copied().fold(f64::INFINITY, f64::min);
        let most = held.iter().copied().fold(0.0, f64::max);
        m.runs.push((frozen.clone(), slowest_request));
        m.windows.extend(frozen);
        m.slowest.push(slowest_request);
        m.added.push(widest - slowest_request);
        m.spreads.push(most - least);
        m.round_trips.push(least);
        m.overlaps.push(result["overlap_ms"].as_f64().unwrap_or_default());
    }
    m
}

/// `rcu_expedited` held at 1 while it lives, the old value put back after.
struct RcuHeld(Vec<u8>);

impl RcuHeld {
    fn expedite() -> RcuHeld {
        let old = std::fs::read(RCU_KNOB).expect("read rcu_expedited");
        std::fs::write(RCU_KNOB, b"1").expect("set rcu_expedited");
        RcuHeld(old)
    }
}

impl Drop for RcuHeld {
    fn drop(&mut self) {
        let _ = std::fs::write(RCU_KNOB, &self.0);
    }
}
