//! `freezeframe demo`: the whole job on a scratch filesystem, no account or setup needed. Makes a
//! loop-mounted ext4, starts a writer that fsyncs numbered records, takes a snapshot with the
//! local-image provider while it writes, then checks the captured image (fsck, every record
//! acknowledged before the request) and reports the frozen window and the writer's stall.
//! Everything it made is removed at the end, also on failure or Ctrl-C.

use crate::scratch::{verify_records, Fs, LoopFs, Writer};
use anyhow::{bail, Context, Result};
use freezeframe_agent::freeze::plan::Selection;
use freezeframe_agent::freeze::{plan_from_system, LiveFilesystems};
use freezeframe_agent::naming::SnapshotName;
use freezeframe_agent::provider::local_image::LocalImage;
use freezeframe_agent::quiesce::QuiescePolicy;
use freezeframe_agent::transaction::{Interrupt, Observer, Options, Phase, Report, Status, Transaction};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prints each phase as it ends. Lines produced while filesystems are frozen are held in
/// memory and printed after the thaw, like the agent's own logs.
struct Progress {
    acked: Arc<AtomicU64>,
    acked_at_request: AtomicU64,
    held: Mutex<Vec<String>>,
}

impl Progress {
    fn say(&self, line: String) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.push(line);
        if !freezeframe_agent::log::is_holding() {
            for line in held.drain(..) {
                println!("{line}");
            }
        }
    }
}

impl Observer for Progress {
    fn phase_started(&self, phase: Phase) {
        if phase == Phase::Request {
            // Frozen now: every record acknowledged so far was written before the freeze.
            self.acked_at_request
                .store(self.acked.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration, ok: bool) {
        let mark = if ok { "ok" } else { "FAILED" };
        self.say(format!(
            "        {:<10} {:>9.1} ms  {mark}",
            phase.to_string(),
            elapsed.as_secs_f64() * 1e3
        ));
    }
}

pub fn run() -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates, mounts and freezes a scratch filesystem: run it as root (sudo freezeframe demo)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo())
}

async fn demo() -> Result<bool> {
    let (stop, interrupt) = Interrupt::new();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
            let _ = stop.send(true);
        }
    });
    let check = |step: &str| {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted during {step}; everything made so far is being removed");
        }
        Ok(())
    };

    println!("freezeframe demo: a consistent snapshot of a filesystem that is being written to");
    let dir = tempfile::Builder::new()
        .prefix("freezeframe-demo-")
        .tempdir_in("/var/tmp")
        .context("cannot make a scratch folder in /var/tmp")?;
    let data = LoopFs::create(
        Fs::Ext4,
        256,
        &dir.path().join("data.img"),
        &dir.path().join("data"),
    )?;
    println!(
        "  [1/4] made a 256 MiB ext4 filesystem on {}, mounted at {}",
        data.device,
        data.mountpoint.display()
    );
    check("setup")?;

    let writer = Writer::start(&data.path("records"))?;
    writer.wait_for(200, Duration::from_secs(30))?;
    println!(
        "  [2/4] a writer is appending fsync'd records ({} so far)",
        writer.acked()
    );
    check("setup")?;

    let plan = plan_from_system(Selection {
        mountpoints: Some(std::slice::from_ref(&data.mountpoint)),
        exclude: &[],
    })?;
    let images = dir.path().join("images");
    let mut provider = LocalImage::new(images.clone());
    let mut filesystems = LiveFilesystems::new(plan.targets.clone(), &dir.path().join("run"));
    let progress = Progress {
        acked: writer.acked_counter(),
        acked_at_request: AtomicU64::new(0),
        held: Mutex::new(Vec::new()),
    };
    println!("  [3/4] snapshot (local-image provider), phase by phase:");
    let report: Report = Transaction {
        filesystems: &mut filesystems,
        provider: &mut provider,
        quiescers: Vec::new(),
        observer: &progress,
        options: Options {
            name: SnapshotName::Fixed("demo".into()),
            max_freeze: Duration::from_secs(20),
            wait: true,
            on_quiesce_failure: QuiescePolicy::Abort,
            retention: None,
        },
        skipped: plan.skipped,
        interrupt,
    }
    .run()
    .await;
    // Let the writer run on a little after the thaw, then stop it.
    writer.wait_for(writer.acked() + 50, Duration::from_secs(30))?;
    let longest_stall = writer.longest_wait();
    let total = writer.stop();
    if report.status != Status::Succeeded {
        bail!(
            "the snapshot failed in {}: {}",
            report.failed_phase.map(|p| p.to_string()).unwrap_or_default(),
            report.error.unwrap_or_default()
        );
    }

    let acked = progress.acked_at_request.load(Ordering::SeqCst);
    let image_copy = std::fs::read_dir(images.join("demo"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .context("the snapshot holds no image")?;
    let (clean, fsck) = Fs::Ext4.check(&image_copy)?;
    let view = LoopFs::attach_read_only(Fs::Ext4, &image_copy, &dir.path().join("view"))?;
    let records = std::fs::read(view.path("records")).context("the image has no records file")?;
    let records_ok = verify_records(&records, acked);
    drop(view);

    println!(
        "  [4/4] checked the captured image: fsck {}; {}",
        if clean { "clean" } else { "NOT clean" },
        match &records_ok {
            Ok(()) => format!("all {acked} records acknowledged before the request are in it"),
            Err(e) => format!("records: {e}"),
        }
    );
    println!();
    println!(
        "  writes were blocked for {:.1} ms (first FIFREEZE to last FITHAW)",
        report.frozen_ms
    );
    println!(
        "  the writer's longest wait for one fsync'd record: {:.1} ms; it wrote {total} records in all",
        longest_stall.as_secs_f64() * 1e3
    );
    println!("  no shutdown, no restart: the writer kept going before and after the snapshot");
    let pass = clean && records_ok.is_ok();
    if !clean {
        println!("{fsck}");
    }
    println!();
    println!(
        "verdict: {}",
        if pass {
            "PASS: a consistent snapshot, taken live"
        } else {
            "FAIL"
        }
    );
    Ok(pass)
}
