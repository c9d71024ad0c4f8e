//! `freezeframe-bench`: how long writes are blocked by a live snapshot, freezeframe against the
//! `fsfreeze` script that ec2-consistent-snapshot and QEMU guest agent hooks amount to
//! (`fsfreeze -f`, the API call, `fsfreeze -u`), side by side in one run, on a loop filesystem
//! against the API simulator with a fixed round trip. Reports medians and maxima as a markdown
//! table on stdout and as JSON. Measurements, not pass/fail tests. Run as root: tests/bench/run.

use freezeframe_tests::*;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "dop_v1_bench";
/// Idle time before each measured snapshot.
const SETTLE: Duration = Duration::from_secs(1);

struct Args {
    runs: usize,
    latency: Duration,
    dirty_mib: Vec<u64>,
    json: std::path::PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        runs: 20,
        latency: Duration::from_millis(300),
        dirty_mib: vec![0, 256, 1024],
        json: "target/bench/freeze-window.json".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value().parse().expect("--runs N"),
            "--latency-ms" => a.latency = Duration::from_millis(value().parse().expect("--latency-ms N")),
            "--dirty-mib" => {
                a.dirty_mib = value()
                    .split(',')
                    .map(|v| v.parse().expect("--dirty-mib A,B,C"))
                    .collect()
            }
            "--json" => a.json = value().into(),
            other => {
                panic!("unknown flag {other}; flags: --runs N --latency-ms N --dirty-mib A,B,C --json PATH")
            }
        }
    }
    a
}

/// Sets vm.dirty_* so written data stays dirty until flushed; restores on drop.
struct DirtyKnobs(Vec<(&'static str, String)>);

fn vm(name: &str) -> String {
    format!("/proc/sys/vm/{name}")
}

impl DirtyKnobs {
    fn hold_dirty() -> DirtyKnobs {
        let names = [
            "dirty_ratio",
            "dirty_background_ratio",
            "dirty_bytes",
            "dirty_background_bytes",
            "dirty_expire_centisecs",
            "dirty_writeback_centisecs",
        ];
        let saved = names
            .iter()
            .map(|n| (*n, std::fs::read_to_string(vm(n)).unwrap().trim().to_string()))
            .collect();
        for (name, value) in [
            ("dirty_bytes", "8589934592"),
            ("dirty_background_bytes", "4294967296"),
            ("dirty_expire_centisecs", "360000"),
            ("dirty_writeback_centisecs", "0"),
        ] {
            std::fs::write(vm(name), value).unwrap();
        }
        DirtyKnobs(saved)
    }
}

impl Drop for DirtyKnobs {
    fn drop(&mut self) {
        let saved = |n: &str| {
            self.0
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let _ = std::fs::write(vm("dirty_expire_centisecs"), saved("dirty_expire_centisecs"));
        let _ = std::fs::write(
            vm("dirty_writeback_centisecs"),
            saved("dirty_writeback_centisecs"),
        );
        // A byte limit and its ratio exclude each other: whichever was in force is written back.
        for (bytes, ratio) in [
            ("dirty_bytes", "dirty_ratio"),
            ("dirty_background_bytes", "dirty_background_ratio"),
        ] {
            let (knob, value) = if saved(bytes) == "0" {
                (ratio, saved(ratio))
            } else {
                (bytes, saved(bytes))
            };
            let _ = std::fs::write(vm(knob), value);
        }
    }
}

/// Writes `mib` MiB without syncing, so it sits dirty in the page cache.
fn make_dirty(dir: &Path, mib: u64) {
    if mib == 0 {
        return;
    }
    let mut f = std::fs::File::create(dir.join("dirty")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
}

/// A writer of 4 KiB fdatasync'd appends every 10 ms, recording each write's latency.
struct StallMeter {
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StallMeter {
    fn start(path: &Path) -> StallMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), latencies.clone());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        let thread = std::thread::spawn(move || {
            let block = [0u8; 4096];
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                f.write_all(&block).unwrap();
                f.sync_data().unwrap();
                l.lock().unwrap().push(t.elapsed().as_secs_f64() * 1e3);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        StallMeter {
            stop,
            latencies,
            thread: Some(thread),
        }
    }

    /// Latencies recorded since the last call.
    fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}

impl Drop for StallMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

#[derive(Default)]
struct Series {
    window: Vec<f64>,
    overhead: Vec<f64>,
    stalls: Vec<f64>,
}

fn main() {
    require_root();
    let args = args();
    let fs = scratch_fs_sized(Fs::Ext4, 2048);
    // Like a real disk: writes through the loop device reach the disk, not the host's cache.
    run_cmd("losetup", &["--direct-io=on", &fs.device]);
    let server = SimServer::start(freezeframe_tests::sim::SimConfig {
        token: TOKEN.into(),
        droplet_id: 3164444,
        droplet_name: "bench".into(),
        disk: None,
        image_dir: fs.dir.path().join("sim-images"),
        action_delay: Duration::from_millis(100),
        latency: args.latency,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
    });
    let token = fs.dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = fs.dir.path().join("etc/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "[agent]\nruntime_dir = {:?}\n[freeze]\nmountpoints = [{:?}]\nmax_freeze = \"60s\"\n\
             [quiesce]\nhooks_dir = {:?}\n[digitalocean]\napi_url = {:?}\nmetadata_url = {:?}\n\
             token_file = {:?}\n",
            fs.dir.path().join("run").display().to_string(),
            fs.mountpoint.display().to_string(),
            fs.dir.path().join("hooks.d").display().to_string(),
            server.url,
            server.url,
            token.display().to_string()
        ),
    )
    .unwrap();
    let _knobs = DirtyKnobs::hold_dirty();
    let meter = StallMeter::start(&fs.path("writer"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let mut results = Vec::new();
    let mut rows = Vec::new();

    for &mib in &args.dirty_mib {
        let (mut ours, mut script) = (Series::default(), Series::default());
        for run in 0..args.runs {
            // freezeframe: the agent as users run it. Both tools start from a filesystem left
            // alone for a while: a freeze right after a thaw skips work (RCU grace periods) that
            // a freeze in real life pays.
            make_dirty(&fs.mountpoint, mib);
            std::thread::sleep(SETTLE);
            meter.take();
            let out = Command::new(agent_bin())
                .arg("--config")
                .arg(&config)
                .args(["snapshot", "--json", "--name", &format!("bench-{mib}-{run}")])
                .output()
                .unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
            assert_eq!(report["status"], "succeeded", "{report:#}");
            let frozen = report["frozen_ms"].as_f64().unwrap();
            ours.window.push(frozen);
            ours.overhead
                .push(frozen - report["request_ms"].as_f64().unwrap());
            // The write blocked by the freeze finishes just after the thaw: count it here.
            std::thread::sleep(Duration::from_millis(100));
            ours.stalls.extend(meter.take());

            // The script: fsfreeze -f, the API call, fsfreeze -u.
            make_dirty(&fs.mountpoint, mib);
            std::thread::sleep(SETTLE);
            meter.take();
            let mp = fs.mountpoint.to_str().unwrap();
            let started = Instant::now();
            run_cmd("fsfreeze", &["--freeze", mp]);
            let api = Instant::now();
            let status = rt.block_on(async {
                http.post(format!("{}/v2/droplets/3164444/actions", server.url))
                    .bearer_auth(TOKEN)
                    .json(&json!({"type": "snapshot", "name": format!("script-{mib}-{run}")}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
            let api_ms = api.elapsed().as_secs_f64() * 1e3;
            run_cmd("fsfreeze", &["--unfreeze", mp]);
            let window = started.elapsed().as_secs_f64() * 1e3;
            assert_eq!(status.ok(), Some(201));
            script.window.push(window);
            script.overhead.push(window - api_ms);
            std::thread::sleep(Duration::from_millis(100));
            script.stalls.extend(meter.take());
        }
        for (tool, s) in [("freezeframe", &ours), ("fsfreeze script", &script)] {
            let row = json!({
                "tool": tool, "dirty_mib": mib, "runs": args.runs,
                "window_ms_median": percentile(&s.window, 50.0), "window_ms_max": percentile(&s.window, 100.0),
                "overhead_ms_median": percentile(&s.overhead, 50.0), "overhead_ms_max": percentile(&s.overhead, 100.0),
                "write_ms_p50": percentile(&s.stalls, 50.0), "write_ms_p99": percentile(&s.stalls, 99.0),
                "write_ms_max": percentile(&s.stalls, 100.0),
            });
            rows.push(format!(
                "| {tool} | {mib} MiB | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
                row["window_ms_median"].as_f64().unwrap(),
                row["window_ms_max"].as_f64().unwrap(),
                row["overhead_ms_median"].as_f64().unwrap(),
                row["overhead_ms_max"].as_f64().unwrap(),
                row["write_ms_p50"].as_f64().unwrap(),
                row["write_ms_p99"].as_f64().unwrap(),
                row["write_ms_max"].as_f64().unwrap(),
            ));
            results.push(row);
        }
    }
    drop(meter);
    println!(
        "Frozen window and write stalls, {} snapshots each, API round trip {} ms, ext4 on a loop device (direct I/O):\n",
        args.runs,
        args.latency.as_millis()
    );
    println!("| tool | dirty before | frozen window ms (median / max) | window − API ms (median / max) | fsync'd 4 KiB write ms (p50 / p99 / max) |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    });
    std::fs::write(
        &args.json,
        serde_json::to_vec_pretty(
            &json!({"latency_ms": args.latency.as_millis() as u64, "machine": machine, "results": results}),
        )
        .unwrap(),
    )
    .unwrap();
    println!("\nJSON: {}", args.json.display());
}

fn run_cmd(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd).args(args).status().is_ok_and(|s| s.success());
    assert!(ok, "{cmd} {args:?} failed");
}
