//! Part 2 of the benchmark, with a database: PostgreSQL under pgbench while snapshots are taken
//! by freezeframe (CHECKPOINT, then the freeze), by the `fsfreeze` script, and by what the
//! DigitalOcean docs' advice comes to for a database: stop the service, snapshot, start it.
//! pgbench logs every transaction; what counts is how long no transaction completed around a
//! snapshot, and the worst second's TPS against the TPS between snapshots. pgbench runs again
//! at once whenever it exits (a stopped server ends it), as an application reconnects.
//!
//! And the way DigitalOcean's guide asks for, `freezeframe snapshot --offline`: the simulator's
//! power actions reach this machine's PostgreSQL as a Droplet's would reach it (stopped as
//! systemd stops it at poweroff, started as at boot), with the rest of the shutdown, the boot
//! and the snapshot action taking the times [`OfflineTimings`] gives.

use crate::record::{Recorded, Strategy, TpsLine};
use crate::{
    agent_config, agent_snapshot, fsfreeze_script, median_max, percentile, sim_config, simulator, ApiCall,
    Args, Section, DROPLET_ID, TOKEN,
};
use freezeframe_tests::postgres::PgServer;
use freezeframe_tests::sim::{Guest, SimServer};
use freezeframe_tests::*;
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Load between snapshots, before and after each.
pub const SETTLE: Duration = Duration::from_millis(1500);

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// pgbench, restarted whenever it exits, logging each transaction into `logs`.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    logs: PathBuf,
}

impl Load {
    pub fn start(sockets: &Path, logs: PathBuf) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, dir, sockets) = (stop.clone(), logs.clone(), sockets.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let mut child: Child = Command::new("runuser")
                    .args([
                        "-u", "postgres", "--", "pgbench", "-n", "-c", "4", "-j", "2", "-T", "3600",
                    ])
                    .args([
                        "-l",
                        "--log-prefix",
                        "pgb",
                        "-h",
                        sockets.to_str().unwrap(),
                        "-p",
                        "5432",
                    ])
                    .arg("postgres")
                    .current_dir(&dir)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .process_group(0)
                    .spawn()
                    .unwrap();
                while !s.load(Ordering::SeqCst) {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if child.try_wait().unwrap().is_none() {
                    // SIGINT: pgbench ends its clients and returns.
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(pid, nix::sys::signal::SIGINT);
                    let _ = child.wait();
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Load {
            stop,
            thread: Some(thread),
            logs,
        }
    }

    /// Stops pgbench; the completion time (s since the epoch) of every transaction, sorted.
    pub fn finish(mut self) -> Vec<f64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let mut done = Vec::new();
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            let path = entry.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with("pgb.") {
                continue;
            }
            // client_id transaction_no time script_no time_epoch time_us …
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let (Some(s), Some(us)) = (f.get(4), f.get(5)) {
                    if let (Ok(s), Ok(us)) = (s.parse::<f64>(), us.parse::<f64>()) {
                        done.push(s + us / 1e6);
                    }
                }
            }
            let _ = std::fs::remove_file(path);
        }
        done.sort_by(|a, b| a.total_cmp(b));
        done
    }
}

/// Per snapshot: the longest time without a completed transaction from `SETTLE/2` before it to
/// `SETTLE/2` after, in ms; and the fewest transactions in any one-second span within that.
fn around(done: &[f64], from: f64, to: f64) -> (f64, f64) {
    let margin = SETTLE.as_secs_f64() / 2.0;
    let (lo, hi) = (from - margin, to + margin);
    let inside: Vec<f64> = done.iter().copied().filter(|t| *t >= lo && *t <= hi).collect();
    let mut edges = vec![lo];
    edges.extend(&inside);
    edges.push(hi);
    let gap = edges.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let mut worst = f64::INFINITY;
    let mut start = lo;
    while start + 1.0 <= hi {
        let n = inside
            .iter()
            .filter(|t| **t >= start && **t < start + 1.0)
            .count();
        worst = worst.min(n as f64);
        start += 0.05;
    }
    (gap * 1e3, worst)
}

/// TPS in 100 ms bins around the snapshot whose longest gap is the median of `gaps` (one run
/// as it happened: an average over runs would smear the dips), from `SETTLE` before its start
/// to `SETTLE` after its end.
fn median_run_tps(strategy: Strategy, done: &[f64], snapshots: &[(f64, f64)], gaps: &[f64]) -> TpsLine {
    let median = percentile(gaps, 50.0);
    let run = gaps.iter().position(|g| *g == median).unwrap_or(0);
    let (from, to) = snapshots[run];
    let bin = 0.1;
    let (lo, hi) = (from - SETTLE.as_secs_f64(), to + SETTLE.as_secs_f64());
    let bins = ((hi - lo) / bin).ceil() as usize;
    let mut tps = vec![0.0; bins];
    for t in done.iter().filter(|t| **t >= lo && **t < hi) {
        let i = (((t - lo) / bin) as usize).min(bins - 1);
        tps[i] += 1.0 / bin;
    }
    TpsLine {
        strategy,
        start_ms: (lo - from) * 1e3,
        bin_ms: bin * 1e3,
        tps,
        snapshot_ms: (to - from) * 1e3,
    }
}

/// Transactions per second over the quiet stretches (the first half of each settle period).
fn steady_tps(done: &[f64], snapshots: &[(f64, f64)]) -> f64 {
    let rates: Vec<f64> = snapshots
        .iter()
        .map(|(from, _)| {
            let (lo, hi) = (from - SETTLE.as_secs_f64(), from - SETTLE.as_secs_f64() / 2.0);
            done.iter().filter(|t| **t >= lo && **t < hi).count() as f64 / (hi - lo)
        })
        .collect();
    percentile(&rates, 50.0)
}

/// What an offline snapshot costs on the platform. Defaults: the snapshot action at 60 s, one
/// GiB of used disk at the 59 s per GB SnapShooter measured over millions of Droplet snapshots
/// (DigitalOcean's docs say 1 to 3 minutes per GB: "a Droplet with 10 GB of used disk space
/// would take 10 to 30 minutes"); shutdown and boot as the end-to-end test's Debian 12 container
/// with PostgreSQL takes them (about 1.3 s and 3.5 s; DigitalOcean documents neither, and a
/// Droplet's firmware and kernel add to the boot).
pub struct OfflineTimings {
    pub runs: usize,
    pub snapshot: Duration,
    /// The shutdown after PostgreSQL stopped.
    pub shutdown: Duration,
    /// The boot before PostgreSQL starts.
    pub boot: Duration,
}

impl Default for OfflineTimings {
    fn default() -> Self {
        OfflineTimings {
            runs: 3,
            snapshot: Duration::from_secs(60),
            shutdown: Duration::from_secs(2),
            boot: Duration::from_secs(4),
        }
    }
}

/// The database's machine: its PostgreSQL, which the stop-the-service strategy stops and
/// starts, and which power actions reach for the offline one.
struct Machine {
    server: Mutex<Option<PgServer>>,
    data: PathBuf,
    sockets: PathBuf,
    shutdown: Duration,
    boot: Duration,
}

impl Machine {
    fn stop_service(&self) {
        drop(self.server.lock().unwrap().take());
    }

    fn start_service(&self) {
        *self.server.lock().unwrap() = Some(PgServer::start(&self.data, &self.sockets, false));
    }
}

impl Guest for Machine {
    fn shutdown(&self) -> bool {
        self.stop_service();
        std::thread::sleep(self.shutdown);
        true
    }

    fn power_off(&self) {
        self.stop_service();
    }

    fn power_on(&self) {
        std::thread::sleep(self.boot);
        self.start_service();
    }
}

/// One strategy's snapshots under load: each run's (start, end), and the completion times of
/// the transactions, in seconds since the epoch.
fn under_load(
    sockets: &Path,
    logs: &Path,
    runs: usize,
    snapshot: &mut dyn FnMut(usize),
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let load = Load::start(sockets, logs.to_path_buf());
    std::thread::sleep(SETTLE);
    let mut snapshots = Vec::new();
    for run in 0..runs {
        std::thread::sleep(SETTLE);
        let from = now_s();
        snapshot(run);
        snapshots.push((from, now_s()));
    }
    std::thread::sleep(SETTLE);
    (snapshots, load.finish())
}

pub fn run(args: &Args, records: &mut Recorded) -> Section {
    let fs = scratch_fs_sized(Fs::Ext4, 2048);
    run_cmd_direct_io(&fs.device);
    let (started, sockets, logs) = pgbench_server(&fs);
    let machine = Arc::new(Machine {
        server: Mutex::new(Some(started)),
        data: fs.mountpoint.join("pg/data"),
        sockets: sockets.clone(),
        shutdown: args.offline.shutdown,
        boot: args.offline.boot,
    });

    let sim = simulator(fs.dir.path(), args.latency);
    let quiescer = format!(
        "[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\nport = 5432\n",
        sockets.display().to_string()
    );
    let config = agent_config(fs.dir.path(), &[&fs.mountpoint], &sim.url, &quiescer);
    let api = ApiCall::new(&sim.url);

    let mut section = Section::new(
        format!(
            "PostgreSQL 15 under pgbench (scale 10, 4 clients), {} snapshots each",
            args.runs
        ),
        vec![
            "strategy",
            "longest time with no transaction completing, ms (median / max)",
            "worst second's TPS, % of steady (median / min)",
            "steady TPS",
        ],
    );
    let offline = OfflinePlatform::start(fs.dir.path(), args, machine.clone());
    let strategies = [
        (Strategy::Freezeframe, args.runs),
        (Strategy::FsfreezeScript, args.runs),
        (Strategy::StopService, args.runs),
        (Strategy::Offline, args.offline.runs),
    ];
    for (strategy, runs) in strategies.into_iter().filter(|(_, runs)| *runs > 0) {
        let (snapshots, done) = under_load(&sockets, &logs, runs, &mut |run| {
            let name = format!("db-{run}");
            match strategy {
                Strategy::Freezeframe => drop(agent_snapshot(&config, &name)),
                Strategy::FsfreezeScript => drop(fsfreeze_script(&[&fs.mountpoint], &api, &name)),
                Strategy::StopService => {
                    machine.stop_service();
                    api.snapshot(&name);
                    machine.start_service();
                }
                Strategy::Offline => offline.snapshot(&name),
            }
        });
        let steady = steady_tps(&done, &snapshots);
        let (gaps, worst): (Vec<f64>, Vec<f64>) = snapshots
            .iter()
            .map(|(from, to)| {
                let (gap, worst) = around(&done, *from, *to);
                (gap, 100.0 * worst / steady)
            })
            .unzip();
        records
            .tps
            .push(median_run_tps(strategy, &done, &snapshots, &gaps));
        let label = if runs == args.runs {
            strategy.label().to_string()
        } else {
            format!("{} ({runs} runs)", strategy.label())
        };
        section.rows.push(vec![
            label,
            median_max(&gaps),
            format!("{:.0} / {:.0}", percentile(&worst, 50.0), percentile(&worst, 0.0)),
            format!("{steady:.0}"),
        ]);
        section.json.push(json!({
            "strategy": strategy.label(), "runs": runs, "steady_tps": steady,
            "no_tps_ms_median": percentile(&gaps, 50.0), "no_tps_ms_max": percentile(&gaps, 100.0),
            "worst_second_pct_median": percentile(&worst, 50.0), "worst_second_pct_min": percentile(&worst, 0.0),
        }));
    }
    section.notes.push(
        "freezeframe's run includes a CHECKPOINT before the freeze (its PostgreSQL quiescer); the \
         stopped service is back only after PostgreSQL's shutdown checkpoint and its start."
            .into(),
    );
    if args.offline.runs > 0 {
        section.notes.push(offline.note(args));
    }
    section
}

/// The platform an offline snapshot meets: a simulator whose snapshot action takes the
/// documented time and whose power actions reach [`Machine`]; the CLI's reports.
struct OfflinePlatform {
    sim: SimServer,
    state: PathBuf,
    downtimes: Mutex<Vec<f64>>,
}

impl OfflinePlatform {
    fn start(dir: &Path, args: &Args, machine: Arc<Machine>) -> OfflinePlatform {
        let sim = SimServer::start(freezeframe_tests::sim::SimConfig {
            action_delay: args.offline.snapshot,
            image_dir: dir.join("sim-images-offline"),
            ..sim_config(dir, args.latency)
        });
        sim.sim.set_guest(machine);
        OfflinePlatform {
            sim,
            state: dir.join("cli-state"),
            downtimes: Mutex::new(Vec::new()),
        }
    }

    /// One `freezeframe snapshot --offline`, as a user runs it from another machine.
    fn snapshot(&self, name: &str) {
        let out = Command::new(cli_bin())
            .args(["--api-url", &self.sim.url, "--json", "snapshot", "--offline"])
            .args(["--droplet", &DROPLET_ID.to_string(), "--name", name])
            .env("DIGITALOCEAN_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", &self.state)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert!(
            out.status.success() && report["succeeded"] == true,
            "freezeframe snapshot --offline: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let downtime = report["downtime_ms"].as_f64().expect("the report's downtime");
        self.downtimes.lock().unwrap().push(downtime);
    }

    fn note(&self, args: &Args) -> String {
        let downtimes = self.downtimes.lock().unwrap();
        format!(
            "The offline runs: the snapshot action takes {:.0} s (one GiB of used disk at the 59 s per GB \
             that SnapShooter measured over millions of Droplet snapshots; DigitalOcean's docs say 1 to 3 \
             minutes per GB), the shutdown {:.1} s after PostgreSQL stopped and the boot {:.1} s before it \
             starts (the end-to-end test's Debian 12 container; DigitalOcean documents neither). The \
             Droplet stays off until the snapshot action completes (it is locked until then), so the \
             outage grows by about a minute for each further GiB of used disk. The CLI's own report: \
             downtime {} ms (median / max), from the shutdown request to the Droplet active again.",
            args.offline.snapshot.as_secs_f64(),
            args.offline.shutdown.as_secs_f64(),
            args.offline.boot.as_secs_f64(),
            median_max(&downtimes)
        )
    }
}

/// PostgreSQL on `fs` (data in `pg/data`), initialised for pgbench at scale 10: the server,
/// its socket folder, and a folder for pgbench's transaction logs.
pub fn pgbench_server(fs: &ScratchFs) -> (PgServer, PathBuf, PathBuf) {
    let sockets = fs.dir.path().join("pg-run");
    let server = PgServer::start(&fs.mountpoint.join("pg/data"), &sockets, true);
    let init = Command::new("runuser")
        .args(["-u", "postgres", "--", "pgbench", "-i", "-q", "-s", "10", "-h"])
        .arg(&sockets)
        .args(["-p", "5432", "postgres"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let logs = fs.dir.path().join("pgbench-logs");
    std::fs::create_dir_all(&logs).unwrap();
    crate::run_cmd("chown", &["postgres:postgres", logs.to_str().unwrap()]);
    (server, sockets, logs)
}

fn run_cmd_direct_io(device: &str) {
    crate::run_cmd("losetup", &["--direct-io=on", device]);
}
