//! Part 7 of the benchmark: a fleet of 1,000 simulated Droplets under the API's real rate limits
//! (250 calls a minute and 5,000 an hour for the one token they share), snapshotted by one
//! `freezeframe --tag … snapshot` with its default pacing. Each Droplet is its own simulator
//! (all of them counting against one shared limit) and its own private bus, where D-Bus
//! activation starts a real agent for the call and the agent exits when idle: the agents are
//! light because they only live while their Droplet is snapshotted. They freeze loop
//! filesystems from a pool, Droplet `i` the `i mod 20`-th: runs start in order, at most
//! `--parallel` (10) at once, so no two runs ever share one.

use crate::record::{FleetRate, Recorded};
use crate::{agent_config, median_max, Args, Section, TOKEN};
use freezeframe_tests::bus::{activated_bus, fake_ssh, PrivateBus};
use freezeframe_tests::sim::{FleetDroplet, RateLimit, SimConfig, SimServer};
use freezeframe_tests::*;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The real API's limits, per token.
const PER_MINUTE: usize = 250;
const PER_HOUR: usize = 5000;
/// Filesystems the Droplets take turns freezing.
const POOL: usize = 20;
const TAG: &str = "bench-fleet";

pub fn run(args: &Args, records: &mut Recorded) -> Section {
    let n = args.fleet_limits;
    eprintln!("freezeframe-bench: starting {n} simulated Droplets");
    let fleet = Fleet::start(n, args.latency);
    let started = Instant::now();
    let out = Command::new(cli_bin())
        .env("DIGITALOCEAN_TOKEN", TOKEN)
        .args(["--ssh-command", fleet.ssh.to_str().unwrap()])
        .args([
            "--api-url",
            &fleet.sims[0].url,
            "--tag",
            TAG,
            "--json",
            "snapshot",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |exit: u64| results.iter().filter(|r| r["exit"] == exit).count();
    let not_started = results
        .iter()
        .filter(|r| r["error"].as_str().is_some_and(|e| e.contains("not started")))
        .count();
    let windows: Vec<f64> = results
        .iter()
        .filter_map(|r| r["result"]["frozen_ms"].as_f64())
        .filter(|ms| *ms > 0.0)
        .collect();
    let refused: Vec<String> = fleet
        .sims
        .iter()
        .flat_map(|s| s.sim.counters().rate_limited)
        .collect();
    let in_windows = refused.iter().filter(|c| c.starts_with("POST")).count();
    let (calls, busiest) = fleet.limit.admitted();
    records.fleet_rate = Some(per_minute(&fleet.limit.admitted_times(), started, wall, n));
    let minutes = wall.as_secs_f64() / 60.0;
    let mut section = Section::new(
        format!(
            "A fleet under the API's real rate limits ({PER_MINUTE} calls a minute, {PER_HOUR} an \
             hour, one token), one `freezeframe --tag … snapshot` call, default pacing"
        ),
        vec![
            "Droplets",
            "succeeded / failed / not started",
            "wall time min",
            "snapshots a minute",
            "API calls (per Droplet)",
            "calls a minute (mean / busiest)",
            "429s (all / inside a frozen window)",
            "frozen window ms (median / max)",
        ],
    );
    section.rows.push(vec![
        n.to_string(),
        format!(
            "{} / {} / {not_started}",
            count(0),
            results.len() - count(0) - not_started
        ),
        format!("{minutes:.1}"),
        format!("{:.1}", count(0) as f64 / minutes),
        format!("{calls} ({:.1})", calls as f64 / n as f64),
        format!("{:.0} / {busiest}", calls as f64 / minutes),
        format!("{} / {in_windows}", refused.len()),
        median_max(&windows),
    ]);
    section.json.push(json!({
        "droplets": n, "succeeded": count(0), "not_started": not_started,
        "results": results.len(), "wall_s": wall.as_secs_f64(),
        "calls": calls, "busiest_minute_calls": busiest,
        "rate_limited": refused.len(), "rate_limited_in_windows": in_windows,
        "frozen_ms_median": crate::percentile(&windows, 50.0),
        "frozen_ms_max": crate::percentile(&windows, 100.0),
    }));
    section.notes.push(
        "Calls count every request the token made, the CLI's listing of the tagged Droplets \
         included; \"busiest\" is the most in any sixty seconds. A 429 inside a frozen window \
         would be the snapshot request itself."
            .into(),
    );
    section
}

/// The calls admitted in the minute before every 5 s of the run.
fn per_minute(times: &[Instant], started: Instant, wall: Duration, droplets: usize) -> FleetRate {
    let step = Duration::from_secs(5);
    let steps = (wall.as_secs_f64() / step.as_secs_f64()).ceil() as u32;
    let calls_last_minute = (1..=steps)
        .map(|k| {
            let at = started + step * k;
            times
                .iter()
                .filter(|t| **t <= at && at.duration_since(**t) < Duration::from_secs(60))
                .count()
        })
        .collect();
    FleetRate {
        droplets,
        limit_per_minute: PER_MINUTE,
        step_s: step.as_secs_f64(),
        calls_last_minute,
    }
}

/// The simulated Droplets, their buses and filesystems, and the stand-in for ssh that reaches
/// each by its public address.
struct Fleet {
    limit: Arc<RateLimit>,
    sims: Vec<SimServer>,
    ssh: std::path::PathBuf,
    _buses: Vec<PrivateBus>,
    _pool: Vec<ScratchFs>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start(n: usize, latency: Duration) -> Fleet {
        let dir = scratch();
        let pool: Vec<ScratchFs> = (0..POOL.min(n)).map(|_| scratch_fs(Fs::Ext4)).collect();
        let limit = RateLimit::new(PER_MINUTE, PER_HOUR);
        let address = |i: usize| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        let listed: Vec<FleetDroplet> = (0..n)
            .map(|i| FleetDroplet {
                id: droplet_id(i),
                name: format!("fleet-{i}"),
                tags: vec![TAG.into()],
                public_ipv4: address(i),
            })
            .collect();
        // The account's view, which the CLI asks which Droplets carry the tag: a simulator of
        // its own (its own Droplet untagged), counting against the same limit.
        let account = SimServer::start(SimConfig {
            droplet_name: "account".into(),
            fleet: listed,
            ..sim_config(&dir.path().join("account"), 0, latency, &limit)
        });
        let mut sims = vec![account];
        let mut buses = Vec::new();
        for i in 0..n {
            let own = dir.path().join(format!("droplet-{i}"));
            let sim = SimServer::start(SimConfig {
                droplet_name: format!("fleet-{i}"),
                ..sim_config(&own, droplet_id(i), latency, &limit)
            });
            let fs = &pool[i % pool.len()];
            let config = agent_config(&own, &[&fs.mountpoint], &sim.url, "");
            // Gone a second after its run, so that few agents live at once.
            let drop_ins = config.with_file_name("config.d");
            std::fs::create_dir_all(&drop_ins).unwrap();
            std::fs::write(drop_ins.join("idle.toml"), "[agent]\nidle_exit = \"1s\"\n").unwrap();
            buses.push(activated_bus(&own, &config));
            sims.push(sim);
        }
        let addresses: Vec<String> = (0..n).map(address).collect();
        let hosts: Vec<(&str, &PrivateBus)> =
            addresses.iter().map(String::as_str).zip(buses.iter()).collect();
        let ssh = fake_ssh(dir.path(), &hosts);
        Fleet {
            limit,
            sims,
            ssh,
            _buses: buses,
            _pool: pool,
            _dir: dir,
        }
    }
}

fn droplet_id(i: usize) -> u64 {
    4_000_000 + i as u64
}

/// A simulated Droplet `id` of the account, its images in `dir`.
fn sim_config(dir: &std::path::Path, id: u64, latency: Duration, limit: &Arc<RateLimit>) -> SimConfig {
    SimConfig {
        droplet_id: id,
        rate_limit: Some(limit.clone()),
        ..crate::sim_config(dir, latency)
    }
}
