//! `freezeframe demo`: the whole job with no account or setup. Makes a loop-mounted ext4 that
//! stands for a Droplet's disk, starts the bundled DigitalOcean API simulator (which copies that
//! disk when it registers a snapshot, as the hypervisor would) and a writer that fsyncs numbered
//! records, takes a snapshot through the `digitalocean` provider while the writer runs, then
//! checks the captured image (fsck, every record acknowledged before the request) and reports
//! the phases, the frozen window and the writer's longest stall. Everything it made is removed
//! at the end, also on failure or Ctrl-C.

use crate::scratch::{verify_records, Fs, LoopFs, Writer};
use anyhow::{bail, Context, Result};
use freezeframe_agent::config::{DigitalOceanSettings, ThawAfter};
use freezeframe_agent::freeze::plan::Selection;
use freezeframe_agent::freeze::{plan_from_system, LiveFilesystems};
use freezeframe_agent::naming::SnapshotName;
use freezeframe_agent::provider::digitalocean::DigitalOcean;
use freezeframe_agent::quiesce::QuiescePolicy;
use freezeframe_agent::transaction::{Interrupt, Observer, Options, Phase, Report, Status, Transaction};
use freezeframe_do_sim::{SimConfig, SimServer};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A real API round trip is a few hundred milliseconds; the simulator is told to take as long.
const API_LATENCY: Duration = Duration::from_millis(300);
const TOKEN: &str = "dop_v1_demo_token_for_the_simulator";

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

    println!("freezeframe demo: a consistent snapshot of a Droplet's disk while it is being written to");
    let dir = tempfile::Builder::new()
        .prefix("freezeframe-demo-")
        .tempdir_in("/var/tmp")
        .context("cannot make a scratch folder in /var/tmp")?;
    let data = LoopFs::create(
        Fs::Ext4,
        128,
        &dir.path().join("disk.img"),
        &dir.path().join("data"),
    )?;
    println!(
        "  [1/5] made a 128 MiB ext4 filesystem on {} for the Droplet's disk, mounted at {}",
        data.device,
        data.mountpoint.display()
    );
    check("setup")?;

    let sim_images = dir.path().join("sim-images");
    std::fs::create_dir_all(&sim_images)?;
    let sim = SimServer::start(SimConfig {
        token: TOKEN.into(),
        droplet_id: 3164444,
        droplet_name: "demo-droplet".into(),
        disk: Some(data.device.clone().into()),
        image_dir: sim_images,
        action_delay: Duration::from_secs(2),
        latency: API_LATENCY,
        faults: Vec::new(),
        volumes: Vec::new(),
    });
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    println!(
        "  [2/5] the DigitalOcean API simulator listens on {} ({} ms per call)",
        sim.url,
        API_LATENCY.as_millis()
    );

    let writer = Writer::start(&data.path("records"))?;
    writer.wait_for(200, Duration::from_secs(30))?;
    println!(
        "  [3/5] a writer is appending fsync'd records ({} so far)",
        writer.acked()
    );
    check("setup")?;

    let plan = plan_from_system(Selection {
        mountpoints: Some(std::slice::from_ref(&data.mountpoint)),
        exclude: &[],
    })?;
    let max_freeze = Duration::from_secs(20);
    let mut provider = DigitalOcean::new(
        DigitalOceanSettings {
            api_url: sim.url.clone(),
            metadata_url: sim.url.clone(),
            token_file,
            droplet_id: None,
            thaw_after: ThawAfter::Registered,
            api_timeout: Duration::from_secs(15),
            volumes: false,
            volume_links: "/dev/disk/by-id".into(),
        },
        max_freeze,
        false,
    );
    let mut filesystems = LiveFilesystems::new(plan.targets.clone(), &dir.path().join("run"));
    let progress = Progress {
        acked: writer.acked_counter(),
        acked_at_request: AtomicU64::new(0),
        held: Mutex::new(Vec::new()),
    };
    println!("  [4/5] snapshot through the digitalocean provider, phase by phase:");
    let report: Report = Transaction {
        filesystems: &mut filesystems,
        provider: &mut provider,
        quiescers: Vec::new(),
        observer: &progress,
        options: Options {
            name: SnapshotName::Fixed("freezeframe-demo".into()),
            max_freeze,
            wait: true,
            on_quiesce_failure: QuiescePolicy::Abort,
            retention: None,
            unquiesced: Vec::new(),
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
    let image = sim
        .sim
        .images()
        .remove(&report.snapshot_name)
        .context("the simulator holds no image for the snapshot")?;
    let (clean, fsck) = Fs::Ext4.check(&image)?;
    let view = LoopFs::attach_read_only(Fs::Ext4, &image, &dir.path().join("view"))?;
    let records = std::fs::read(view.path("records")).context("the image has no records file")?;
    let records_ok = verify_records(&records, acked);
    drop(view);

    println!(
        "  [5/5] checked the captured image: fsck {}; {}",
        if clean { "clean" } else { "NOT clean" },
        match &records_ok {
            Ok(()) => format!("all {acked} records acknowledged before the request are in it"),
            Err(e) => format!("records: {e}"),
        }
    );
    println!();
    println!(
        "  snapshot action {} registered; snapshot {} completed",
        report.action_id.as_deref().unwrap_or("?"),
        report.snapshot_id.as_deref().unwrap_or("?")
    );
    println!(
        "  writes were blocked for {:.1} ms (first FIFREEZE to last FITHAW), of which the API request took {:.1} ms",
        report.frozen_ms, report.request_ms
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
