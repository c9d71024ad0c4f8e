//! Part 4 of the benchmark: the agent's footprint. Memory and CPU while it serves its bus idle
//! and while it takes snapshots; binary sizes; and cold start to ready: a CLI call that makes
//! the bus start the agent (D-Bus activation with the packaged files), against the same call to
//! an agent already running.

use crate::scaling::Droplet;
use crate::{median_max, ms, percentile, Args, Section};
use freezeframe_tests::bus::{activated_bus, agents_serving};
use freezeframe_tests::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of `pid`, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state; utime and stime
    // are the 14th and 15th fields of the line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks * 1000.0 / hz
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// Size of `binary`, and stripped (as the packages ship it) when `strip` is there.
fn sizes(binary: &Path) -> (u64, Option<u64>) {
    let size = std::fs::metadata(binary).map_or(0, |m| m.len());
    let stripped = std::env::temp_dir().join(format!("ff-bench-strip-{}", std::process::id()));
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    let small = ok.then(|| std::fs::metadata(&stripped).map_or(0, |m| m.len()));
    let _ = std::fs::remove_file(stripped);
    (size, small)
}

pub fn run(args: &Args) -> Section {
    let mut section = Section::new("Agent footprint".into(), vec!["measure", "value"]);
    let mut row = |what: &str, value: String, key: &str, number: f64| {
        section.rows.push(vec![what.into(), value]);
        section.json.push(json!({"measure": key, "value": number}));
    };

    // Idle, serving its bus.
    let droplet = Droplet::start(args.latency);
    let pid = droplet.agent.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(pid);
    let cpu_before = cpu_ms(pid);
    let idle_for = Duration::from_secs(10);
    std::thread::sleep(idle_for);
    let idle_cpu = (cpu_ms(pid) - cpu_before) / idle_for.as_secs_f64() / 10.0;
    row(
        "RSS idle (serving the bus)",
        format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        "rss_idle_kib",
        idle_rss as f64,
    );
    row("CPU idle", format!("{idle_cpu:.2} %"), "cpu_idle_pct", idle_cpu);

    // During snapshots: peak RSS sampled every 2 ms, CPU time per snapshot.
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let cpu_before = cpu_ms(pid);
    for run in 0..args.runs {
        let out = droplet.cli(&["snapshot", "--name", &format!("footprint-{run}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let per_snapshot = (cpu_ms(pid) - cpu_before) / args.runs as f64;
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::SeqCst);
    row(
        "RSS peak during snapshots",
        format!("{:.1} MiB", peak as f64 / 1024.0),
        "rss_snapshot_peak_kib",
        peak as f64,
    );
    row(
        "CPU time per snapshot (agent)",
        format!("{per_snapshot:.1} ms"),
        "cpu_ms_per_snapshot",
        per_snapshot,
    );
    drop(droplet);

    for (name, binary) in [("freezeframe-agent", agent_bin()), ("freezeframe", cli_bin())] {
        let (size, stripped) = sizes(&binary);
        let text = match stripped {
            Some(s) => format!("{} ({} stripped, as packaged)", mib(size), mib(s)),
            None => mib(size),
        };
        row(
            &format!("{name} binary"),
            text,
            &format!("{name}_bytes"),
            stripped.unwrap_or(size) as f64,
        );
    }

    // Cold start through D-Bus activation against a warm call, in the same run.
    let fs = scratch_fs(Fs::Ext4);
    let config = crate::agent_config(fs.dir.path(), &[&fs.mountpoint], "http://127.0.0.1:9", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\nidle_exit = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    let bus = activated_bus(fs.dir.path(), &config);
    let status = || {
        let started = Instant::now();
        let out = Command::new(cli_bin())
            .args(["--bus-address", &bus.address, "status"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ms(started)
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agents_serving(&config).is_empty() {
            assert!(Instant::now() < deadline, "the agent did not exit when idle");
            std::thread::sleep(Duration::from_millis(50));
        }
        cold.push(status());
        warm.push(status());
    }
    row(
        "`freezeframe status` with D-Bus activation (cold start), ms (median / max)",
        median_max(&cold),
        "cold_status_ms_median",
        percentile(&cold, 50.0),
    );
    row(
        "`freezeframe status` to a running agent, ms (median / max)",
        median_max(&warm),
        "warm_status_ms_median",
        percentile(&warm, 50.0),
    );
    section
}
