//! Part 3 of the benchmark: the frozen window with several filesystems frozen at once (the
//! agent and the `fsfreeze` script), and a fleet snapshot: one `freezeframe -H … snapshot` call
//! for 1 to 50 simulated Droplets, each an agent serving its own private bus, freezing its own
//! loop filesystem, with its own API simulator; `ssh` is a stand-in that bridges to the bus a
//! host name stands for (as `ssh HOST systemd-stdio-bridge` does).

use crate::{
    agent_config, agent_snapshot, fsfreeze_script, median_max, merge, percentile, simulator, ApiCall, Args,
    Section, Window, Windows,
};
use freezeframe_tests::bus::{fake_ssh, PrivateBus};
use freezeframe_tests::sim::SimServer;
use freezeframe_tests::*;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn run(args: &Args) -> Vec<Section> {
    vec![filesystems(args), fleet(args)]
}

fn filesystems(args: &Args) -> Section {
    let dir = scratch();
    let most = args.filesystems.iter().copied().max().unwrap_or(1);
    let all: Vec<LoopFs> = (0..most)
        .map(|i| {
            loop_fs(
                Fs::Ext4,
                Fs::Ext4.min_mib(),
                &dir.path().join(format!("fs{i}.img")),
                &dir.path().join(format!("fs{i}")),
            )
        })
        .collect();
    let sim = simulator(dir.path(), args.latency);
    let api = ApiCall::new(&sim.url);
    let mut section = Section::new(
        format!(
            "Frozen window by number of filesystems (ext4 loop devices), {} snapshots each",
            args.runs
        ),
        ["filesystems", "tool"]
            .into_iter()
            .chain(Windows::HEADERS)
            .collect(),
    );
    for &n in &args.filesystems {
        let mountpoints: Vec<&Path> = all[..n].iter().map(|f| f.mountpoint.as_path()).collect();
        let config_dir = dir.path().join(format!("agent-{n}"));
        let config = agent_config(&config_dir, &mountpoints, &sim.url, "");
        let (mut ours, mut script) = (Windows::default(), Windows::default());
        for run in 0..args.runs {
            std::thread::sleep(Duration::from_millis(500));
            let report = agent_snapshot(&config, &format!("fs-{n}-{run}"));
            ours.0.push(Window::of_report(&report));
            std::thread::sleep(Duration::from_millis(500));
            script.0.push(fsfreeze_script(
                &mountpoints,
                &api,
                &format!("fs-script-{n}-{run}"),
            ));
        }
        for (tool, windows) in [("freezeframe", &ours), ("fsfreeze script", &script)] {
            let mut row = vec![n.to_string(), tool.into()];
            row.extend(windows.cells());
            section.rows.push(row);
            let mut entry = json!({"filesystems": n, "tool": tool, "runs": args.runs});
            merge(&mut entry, windows.json());
            section.json.push(entry);
        }
    }
    section
}

/// One simulated Droplet: its filesystem, API, bus and agent (`freezeframe-agent run`).
pub struct Droplet {
    pub agent: Child,
    pub bus: PrivateBus,
    _sim: SimServer,
    _fs: ScratchFs,
}

impl Droplet {
    pub fn start(latency: Duration) -> Droplet {
        let fs = scratch_fs(Fs::Ext4);
        let sim = simulator(fs.dir.path(), latency);
        let bus = PrivateBus::start(&fs.dir.path().join("bus")).expect("start a private bus");
        let config = agent_config(fs.dir.path(), &[&fs.mountpoint], &sim.url, "");
        let agent = Command::new(agent_bin())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the agent");
        let droplet = Droplet {
            agent,
            bus,
            _sim: sim,
            _fs: fs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !droplet.cli(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "the agent did not come up on its bus");
            std::thread::sleep(Duration::from_millis(50));
        }
        droplet
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(cli_bin())
            .args(["--bus-address", &self.bus.address])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Droplet {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.agent.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.agent.wait();
    }
}

/// `count` simulated Droplets named `{prefix}-0`, `{prefix}-1`, …, reached through a stand-in
/// for ssh (kept in the returned folder).
pub struct Behind {
    /// Running as long as this is kept.
    _droplets: Vec<Droplet>,
    pub names: Vec<String>,
    pub ssh: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Behind {
    pub fn ssh(count: usize, prefix: &str, latency: Duration) -> Behind {
        let droplets: Vec<Droplet> = (0..count).map(|_| Droplet::start(latency)).collect();
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
        let dir = scratch();
        let hosts: Vec<(&str, &PrivateBus)> = names
            .iter()
            .map(String::as_str)
            .zip(droplets.iter().map(|d| &d.bus))
            .collect();
        let ssh = fake_ssh(dir.path(), &hosts);
        Behind {
            _droplets: droplets,
            names,
            ssh,
            _dir: dir,
        }
    }
}

fn fleet(args: &Args) -> Section {
    let most = args.fleet.iter().copied().max().unwrap_or(1);
    let Behind { names, ssh, .. } = &Behind::ssh(most, "droplet", args.latency);
    let mut section = Section::new(
        format!("Fleet snapshot from one CLI call (`freezeframe -H … snapshot`, default --parallel 10), {} calls each", args.runs),
        vec!["Droplets", "wall time ms (median / max)", "per Droplet ms (median)"],
    );
    for &n in &args.fleet {
        let mut walls = Vec::new();
        for run in 0..args.runs {
            let mut cmd = Command::new(cli_bin());
            // Each Droplet has a simulator and a token of its own: nothing to pace.
            cmd.args(["--ssh-command", ssh.to_str().unwrap(), "--api-rate", "1000000"]);
            for name in &names[..n] {
                cmd.args(["-H", name]);
            }
            cmd.args(["snapshot", "--name", &format!("fleet-{n}-{run}")]);
            let started = Instant::now();
            let out = cmd.output().unwrap();
            walls.push(crate::ms(started));
            assert!(
                out.status.success(),
                "fleet of {n}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let median = percentile(&walls, 50.0);
        section.rows.push(vec![
            n.to_string(),
            median_max(&walls),
            format!("{:.1}", median / n as f64),
        ]);
        section.json.push(json!({
            "droplets": n, "runs": args.runs, "parallel": 10,
            "wall_ms_median": median, "wall_ms_max": percentile(&walls, 100.0),
        }));
    }
    section
}
