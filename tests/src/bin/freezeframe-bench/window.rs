//! Part 1 and 2 of the benchmark: the frozen window (first FIFREEZE to last FITHAW) and its
//! overhead over the API round trip, for freezeframe and the `fsfreeze` script, with 0 to 1 GiB
//! of dirty page cache written just before each snapshot (held dirty through `vm.dirty_*`),
//! while a writer does an fsync'd 4 KiB append every 10 ms and records each latency.

use crate::record::{Recorded, Tool, WindowSamples};
use crate::{
    agent_config, agent_snapshot, fsfreeze_script, merge, percentile, simulator, ApiCall, Args, Section,
    Window, Windows,
};
use freezeframe_tests::*;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle time before each measured snapshot: both tools start from a filesystem left alone for a
/// while, as in real life (a freeze right after a thaw skips work).
const SETTLE: Duration = Duration::from_secs(1);

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

#[derive(Default)]
struct Series {
    windows: Windows,
    stalls: Vec<f64>,
}

pub fn run(args: &Args, records: &mut Recorded) -> Vec<Section> {
    let fs = scratch_fs_sized(Fs::Ext4, 2048);
    // Like a real disk: writes through the loop device reach the disk, not the host's cache.
    crate::run_cmd("losetup", &["--direct-io=on", &fs.device]);
    let server = simulator(fs.dir.path(), args.latency);
    let config = agent_config(fs.dir.path(), &[&fs.mountpoint], &server.url, "");
    let api = ApiCall::new(&server.url);
    let _knobs = DirtyKnobs::hold_dirty();
    let meter = StallMeter::start(&fs.path("writer"));
    let mut section = Section::new(
        format!(
            "Frozen window and write stalls (ext4 on a loop device with direct I/O, {} snapshots each)",
            args.runs
        ),
        ["tool", "dirty before"]
            .into_iter()
            .chain(Windows::HEADERS)
            .chain(["fsync'd 4 KiB write ms (p50 / p99 / max)"])
            .collect(),
    );
    for &mib in &args.dirty_mib {
        let (mut ours, mut script) = (Series::default(), Series::default());
        for run in 0..args.runs {
            make_dirty(&fs.mountpoint, mib);
            std::thread::sleep(SETTLE);
            meter.take();
            let report = agent_snapshot(&config, &format!("bench-{mib}-{run}"));
            ours.windows.0.push(Window::of_report(&report));
            // The write blocked by the freeze finishes just after the thaw: count it here.
            std::thread::sleep(Duration::from_millis(100));
            ours.stalls.extend(meter.take());

            make_dirty(&fs.mountpoint, mib);
            std::thread::sleep(SETTLE);
            meter.take();
            let window = fsfreeze_script(&[&fs.mountpoint], &api, &format!("script-{mib}-{run}"));
            script.windows.0.push(window);
            std::thread::sleep(Duration::from_millis(100));
            script.stalls.extend(meter.take());
        }
        for (tool, s) in [(Tool::Freezeframe, &ours), (Tool::FsfreezeScript, &script)] {
            records.windows.push(WindowSamples {
                tool,
                dirty_mib: mib,
                frozen_ms: s.windows.0.iter().map(|w| w.total).collect(),
            });
            let tool = tool.label();
            let stalls = [50.0, 99.0, 100.0].map(|p| percentile(&s.stalls, p));
            let mut row = vec![tool.into(), format!("{mib} MiB")];
            row.extend(s.windows.cells());
            row.push(format!("{:.1} / {:.1} / {:.1}", stalls[0], stalls[1], stalls[2]));
            section.rows.push(row);
            let mut entry = json!({
                "tool": tool, "dirty_mib": mib, "runs": args.runs,
                "write_ms_p50": stalls[0], "write_ms_p99": stalls[1], "write_ms_max": stalls[2],
            });
            merge(&mut entry, s.windows.json());
            section.json.push(entry);
        }
    }
    section.notes.push(
        "p99 depends on how many writes each tool's runs contain (an agent run lasts longer than the \
         script's), so compare the maxima."
            .into(),
    );
    vec![section]
}
