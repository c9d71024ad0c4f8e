//! `freezeframe-demo`: the whole job with no account or setup. Makes a loop-mounted ext4 that
//! stands for a Droplet's disk, starts the bundled DigitalOcean API simulator (which copies that
//! disk when it registers a snapshot, as the hypervisor would), `freezeframe-agent run` on a
//! private bus, and a writer that fsyncs numbered records; asks the agent over D-Bus for a
//! snapshot through the `digitalocean` provider while the writer runs, then
//! checks the captured image (fsck, every record acknowledged before the request) and reports
//! the phases, the frozen window and the writer's longest stall. Everything it made is removed
//! at the end, also on failure or Ctrl-C.

use crate::private_bus::PrivateBus;
use crate::scratch::{verify_records, Fs, LoopFs, Writer};
use anyhow::{bail, Context, Result};
use freezeframe::agent::{self as commands, Finished, SnapshotRequest};
use freezeframe::client::Target;
use freezeframe::outln;
use freezeframe_contract::{Report, Status};
use freezeframe_do_sim::{Capture, SimConfig, SimServer};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A real API round trip is a few hundred milliseconds; the simulator is told to take as long.
const API_LATENCY: Duration = Duration::from_millis(300);
const TOKEN: &str = "dop_v1_demo_token_for_the_simulator";

/// Prints each phase as it ends, as the agent reports it over D-Bus. Lines that arrive while
/// the filesystem is frozen are held and printed after the thaw.
struct Progress {
    acked: Arc<AtomicU64>,
    acked_at_request: Arc<AtomicU64>,
    held: Vec<String>,
    frozen: bool,
}

impl freezeframe::progress::Progress for Progress {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64) {
        if !finished {
            if phase == "freeze" {
                self.frozen = true;
            }
            if phase == "request" {
                // Frozen now: every record acknowledged so far was written before the freeze.
                self.acked_at_request
                    .store(self.acked.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            return;
        }
        let mark = if ok { "ok" } else { "FAILED" };
        self.held
            .push(format!("        {phase:<10} {elapsed_ms:>9.1} ms  {mark}"));
        if phase == "thaw" {
            self.frozen = false;
        }
        if !self.frozen {
            self.done();
        }
    }

    fn done(&mut self) {
        for line in self.held.drain(..) {
            outln!("{line}");
        }
    }
}

/// The agent binary: beside this one (a cargo build, or /usr/bin), or on the PATH.
fn agent_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("freezeframe-agent")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("freezeframe-agent"))
}

/// `freezeframe-agent run` on the demo's bus; stopped (SIGTERM, so a running job thaws and
/// resumes first) on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(config: &Path, bus: &PrivateBus, pid: &AtomicU32) -> Result<Agent> {
        let binary = agent_binary();
        let child = Command::new(&binary)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            // Its own process group: Ctrl-C reaches the demo, which stops the agent in order.
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} (build the workspace first)", binary.display()))?;
        pid.store(child.id(), Ordering::SeqCst);
        Ok(Agent { child })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}

pub fn run() -> Result<bool> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates, mounts and freezes a scratch filesystem: run it as root (sudo freezeframe-demo)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo())
}

async fn demo() -> Result<bool> {
    let agent_pid = Arc::new(AtomicU32::new(0));
    let interrupted = watch_ctrl_c(agent_pid.clone());
    let check = |step: &str| {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted during {step}; everything made so far is being removed");
        }
        Ok(())
    };

    outln!("freezeframe demo: a consistent snapshot of a Droplet's disk while it is being written to");
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
    outln!(
        "  [1/6] made a 128 MiB ext4 filesystem on {} for the Droplet's disk, mounted at {}",
        data.device,
        data.mountpoint.display()
    );
    check("setup")?;
    let sim = start_simulator(dir.path(), &data)?;
    let config = write_config(dir.path(), &data, &sim.url)?;
    let bus = PrivateBus::start(&dir.path().join("bus"))?;
    let agent = Agent::start(&config, &bus, &agent_pid)?;
    let target = Target::Bus(bus.address.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while commands::status(&target).await.is_err() {
        check("setup")?;
        if std::time::Instant::now() > deadline {
            bail!("the agent did not come up on the demo's bus");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outln!(
        "  [3/6] freezeframe-agent serves org.freezeframe.Agent1 on a private bus ({})",
        bus.address
    );
    let writer = Writer::start(&data.path("records"))?;
    writer.wait_for(200, Duration::from_secs(30))?;
    outln!(
        "  [4/6] a writer is appending fsync'd records ({} so far)",
        writer.acked()
    );
    check("setup")?;
    let (outcome, load) = snapshot_under_load(&target, writer).await?;
    drop(agent);
    let report = succeeded(outcome)?;
    let image = sim
        .sim
        .images()
        .remove(&report.snapshot_name)
        .context("the simulator holds no image for the snapshot")?;
    let verdict = check_image(&image, &dir.path().join("view"), load.acked_at_request)?;
    summarise(&report, &load, &verdict);
    Ok(verdict.pass())
}

/// On Ctrl-C, the agent (whose pid is in `agent_pid` once started) winds its job down (thaw,
/// resume) and reports; then everything is removed. The flag tells the steps to stop.
fn watch_ctrl_c(agent_pid: Arc<AtomicU32>) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
            let pid = agent_pid.load(Ordering::SeqCst);
            if pid != 0 {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            }
        }
    });
    interrupted
}

/// The API simulator, copying `data`'s device when it registers a snapshot; and its token.
fn start_simulator(dir: &Path, data: &LoopFs) -> Result<SimServer> {
    let sim_images = dir.join("sim-images");
    std::fs::create_dir_all(&sim_images)?;
    let sim = SimServer::start(SimConfig {
        token: TOKEN.into(),
        droplet_id: 3164444,
        droplet_name: "demo-droplet".into(),
        disk: Some(data.device.clone().into()),
        image_dir: sim_images,
        action_delay: Duration::from_secs(2),
        capture: Capture::Registration,
        latency: API_LATENCY,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    });
    outln!(
        "  [2/6] the DigitalOcean API simulator listens on {} ({} ms per call)",
        sim.url,
        API_LATENCY.as_millis()
    );
    Ok(sim)
}

/// The agent's configuration, as installed but naming the scratch filesystem alone and the
/// simulator: nothing of this machine is frozen or quiesced.
fn write_config(dir: &Path, data: &LoopFs, api: &str) -> Result<PathBuf> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let token_file = etc.join("token");
    std::fs::write(&token_file, TOKEN)?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    let config = etc.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nruntime_dir = {run:?}\n[freeze]\nmountpoints = [{mnt:?}]\nmax_freeze = \"20s\"\n\
             [quiesce]\nauto = false\nhooks_dir = {hooks:?}\n\
             [digitalocean]\napi_url = {api:?}\nmetadata_url = {api:?}\ntoken_file = {token:?}\nvolumes = false\n\
             [history]\nfile = {history:?}\n[metrics]\ntextfile_dir = \"\"\n",
            run = dir.join("run").display().to_string(),
            history = dir.join("history.json").display().to_string(),
            mnt = data.mountpoint.display().to_string(),
            hooks = etc.join("hooks.d").display().to_string(),
            token = token_file.display().to_string(),
        ),
    )?;
    Ok(config)
}

/// What the writer saw while the snapshot was taken.
struct Load {
    /// Records acknowledged when the request went out: all of them must be in the image.
    acked_at_request: u64,
    longest_stall: Duration,
    written: u64,
}

async fn snapshot_under_load(
    target: &Target,
    writer: Writer,
) -> Result<(Result<Finished, commands::Failure>, Load)> {
    let acked_at_request = Arc::new(AtomicU64::new(0));
    let mut progress = Progress {
        acked: writer.acked_counter(),
        acked_at_request: acked_at_request.clone(),
        held: Vec::new(),
        frozen: false,
    };
    outln!("  [5/6] `freezeframe snapshot --wait` through the agent, phase by phase:");
    let request = SnapshotRequest {
        name: Some("freezeframe-demo".into()),
        wait: true,
        dry_run: false,
    };
    let outcome = commands::snapshot(target, &request, &mut progress).await;
    // Let the writer run on a little after the thaw, then stop it.
    writer.wait_for(writer.acked() + 50, Duration::from_secs(30))?;
    let longest_stall = writer.longest_wait();
    let load = Load {
        acked_at_request: acked_at_request.load(Ordering::SeqCst),
        longest_stall,
        written: writer.stop(),
    };
    Ok((outcome, load))
}

fn succeeded(outcome: Result<Finished, commands::Failure>) -> Result<Report> {
    let report = match outcome {
        Ok(Finished::Snapshot(report)) => *report,
        Ok(Finished::DryRun(_)) => bail!("the agent answered a snapshot with a dry run"),
        Err(f) => bail!("{}", f.message),
    };
    if report.status != Status::Succeeded {
        bail!(
            "the snapshot failed{}: {}",
            report
                .failed_phase
                .map(|p| format!(" in {p}"))
                .unwrap_or_default(),
            report.error.as_deref().unwrap_or("?")
        );
    }
    Ok(report)
}

/// What the captured image holds.
struct Verdict {
    clean: bool,
    fsck: String,
    records: Result<(), String>,
}

impl Verdict {
    fn pass(&self) -> bool {
        self.clean && self.records.is_ok()
    }
}

/// fsck on the image, and every record acknowledged before the request in it.
fn check_image(image: &Path, view: &Path, acked: u64) -> Result<Verdict> {
    let (clean, fsck) = Fs::Ext4.check(image)?;
    let view = LoopFs::attach_read_only(Fs::Ext4, image, view)?;
    let records = std::fs::read(view.path("records")).context("the image has no records file")?;
    let verdict = Verdict {
        clean,
        fsck,
        records: verify_records(&records, acked),
    };
    outln!(
        "  [6/6] checked the captured image: fsck {}; {}",
        if clean { "clean" } else { "NOT clean" },
        match &verdict.records {
            Ok(()) => format!("all {acked} records acknowledged before the request are in it"),
            Err(e) => format!("records: {e}"),
        }
    );
    Ok(verdict)
}

fn summarise(report: &Report, load: &Load, verdict: &Verdict) {
    outln!();
    outln!(
        "  snapshot action {} registered; snapshot {} completed",
        report.action_id.as_deref().unwrap_or("?"),
        report.snapshot_id.as_deref().unwrap_or("?")
    );
    outln!(
        "  writes were blocked for {:.1} ms (first FIFREEZE to last FITHAW): freezing {:.1} ms, \
         the API request {:.1} ms, thawing {:.1} ms",
        report.frozen_ms,
        report.freezing_ms,
        report.request_ms,
        report.thawing_ms
    );
    outln!(
        "  the writer's longest wait for one fsync'd record: {:.1} ms; it wrote {} records in all",
        load.longest_stall.as_secs_f64() * 1e3,
        load.written
    );
    outln!("  no shutdown, no restart: the writer kept going before and after the snapshot");
    if !verdict.clean {
        outln!("{}", verdict.fsck);
    }
    outln!();
    outln!(
        "verdict: {}",
        if verdict.pass() {
            "PASS: a consistent snapshot, taken live"
        } else {
            "FAIL"
        }
    );
}
