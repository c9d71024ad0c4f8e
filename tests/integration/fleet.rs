//! A fleet of Droplets sharing one token, whose rate limits the simulators enforce together
//! (lowered from the real API's): `freezeframe -H … snapshot` paces the runs to `--api-rate`
//! and to what is left of the hour, and no request inside a frozen window meets a 429.

use crate::droplet::Droplet;
use crate::service::stderr;
use freezeframe_tests::bus::{fake_ssh, PrivateBus};
use freezeframe_tests::sim::RateLimit;
use freezeframe_tests::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A Droplet of the fleet with its agent serving a private bus.
pub(crate) struct Member {
    agent: Child,
    pub(crate) bus: PrivateBus,
    pub(crate) droplet: Droplet,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.agent.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.agent.wait();
    }
}

fn member(limit: &std::sync::Arc<RateLimit>) -> Member {
    serve(Droplet::in_fleet(limit.clone()))
}

/// `droplet` with its agent serving a private bus, once it answers there.
pub(crate) fn serve(droplet: Droplet) -> Member {
    let bus = PrivateBus::start(&droplet.dir.path().join("bus")).expect("start a private bus");
    let agent = Command::new(agent_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env_remove("DIGITALOCEAN_TOKEN")
        .arg("--config")
        .arg(&droplet.config)
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the agent");
    // Up once it answers `plan`, which asks nothing of the API.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new(cli_bin())
        .args(["--bus-address", &bus.address, "plan"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the agent did not come up on its bus");
        std::thread::sleep(Duration::from_millis(50));
    }
    Member { agent, bus, droplet }
}

/// `count` Droplets sharing `limit`, and `freezeframe` with `args` reaching them all.
fn fleet(count: usize, limit: &std::sync::Arc<RateLimit>) -> (Vec<Member>, std::path::PathBuf, Vec<String>) {
    reached((0..count).map(|_| member(limit)).collect())
}

/// The stand-in for ssh reaching `members` as `droplet-0`, `droplet-1`, …
fn reached(members: Vec<Member>) -> (Vec<Member>, std::path::PathBuf, Vec<String>) {
    let names: Vec<String> = (0..members.len()).map(|i| format!("droplet-{i}")).collect();
    let hosts: Vec<(&str, &PrivateBus)> = names
        .iter()
        .map(String::as_str)
        .zip(members.iter().map(|m| &m.bus))
        .collect();
    let ssh = fake_ssh(members[0].droplet.dir.path(), &hosts);
    (members, ssh, names)
}

fn snapshot_all(ssh: &std::path::Path, names: &[String], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--ssh-command", ssh.to_str().unwrap()]).args(args);
    for name in names {
        cmd.args(["-H", name]);
    }
    cmd.arg("snapshot").output().unwrap()
}

/// Every call the simulators refused with 429.
fn refused(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .flat_map(|m| m.droplet.server.sim.counters().rate_limited)
        .collect()
}

#[test]
fn a_fleet_sharing_a_token_is_paced_under_its_rate_limit_and_no_window_meets_a_429() {
    require_root();
    // 300 calls a minute for the whole account; the fleet is told it may use 250.
    let limit = RateLimit::new(300, 5000);
    let (members, ssh, names) = fleet(50, &limit);
    let started = Instant::now();
    let out = snapshot_all(&ssh, &names, &["--api-rate", "250"]);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("50 of 50 succeeded"), "{text}");
    // The pacing shows, in the progress and at the end.
    let progress = stderr(&out);
    assert!(
        progress.contains("pacing: ") && progress.contains("250 calls a minute"),
        "{progress}"
    );
    assert!(progress.contains("progress: "), "{progress}");

    let refused = refused(&members);
    assert!(
        !refused.iter().any(|call| call.starts_with("POST")),
        "a snapshot request met the rate limit inside its window: {refused:?}"
    );
    assert!(
        refused.is_empty(),
        "paced under the limit, nothing was refused: {refused:?}"
    );
    let posts: u32 = members
        .iter()
        .map(|m| m.droplet.server.sim.counters().snapshot_posts)
        .sum();
    assert_eq!(posts, 50);
    eprintln!("a fleet of 50 under 300 calls a minute took {took:?}");
}

#[test]
fn runs_that_would_find_the_hours_budget_spent_are_not_started() {
    require_root();
    // 10 calls an hour: enough for two runs of this fleet (four calls each), one at a time.
    let limit = RateLimit::new(300, 10);
    let (members, ssh, names) = fleet(5, &limit);
    let out = snapshot_all(&ssh, &names, &["--parallel", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let succeeded = text.matches("succeeded (").count();
    let not_started = text
        .matches("NOT STARTED: the API token's hourly budget is spent until")
        .count();
    assert!(succeeded >= 2, "{text}");
    assert_eq!(
        succeeded + not_started,
        5,
        "each either ran whole or was not started: {text}"
    );
    assert!(text.contains("run it again then"), "{text}");
    assert!(
        refused(&members).is_empty(),
        "no call met the limit: {:?}",
        refused(&members)
    );
}

#[test]
fn a_group_of_droplets_requests_every_disk_and_volume_inside_one_cut() {
    require_root();
    let with_volume = || serve(Droplet::with_volume(Duration::from_millis(100), "", true));
    let (members, ssh, names) = reached(vec![with_volume(), with_volume()]);
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--ssh-command", ssh.to_str().unwrap(), "--json"]);
    for name in &names {
        cmd.args(["-H", name]);
    }
    let out = cmd.args(["snapshot", "--group", "--wait"]).output().unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    assert!(out.status.success(), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], true, "{result:#}");
    let group = result["group"].as_str().unwrap();
    for (m, member) in members.iter().zip(result["members"].as_array().unwrap()) {
        let report = &member["report"];
        let name = report["snapshot_name"].as_str().unwrap();
        assert!(name.contains(group), "{name} carries {group}");
        assert_eq!(report["consistency"], "filesystem", "{report:#}");
        let volumes = report["volume_snapshots"].as_array().unwrap();
        assert_eq!(volumes.len(), 1, "{report:#}");
        let sim = &m.droplet.server.sim;
        let counters = sim.counters();
        assert_eq!((counters.snapshot_posts, counters.volume_snapshot_posts), (1, 1));
        // Read as each request registered, while every member was frozen: both clean.
        let images = sim.images();
        assert_clean(Fs::Ext4, &images[name]);
        assert_clean(Fs::Xfs, &images[&format!("{name}@data")]);
        // Each snapshot records its level and its group, as the control panel shows them.
        let recorded = [
            "freezeframe:filesystem".to_string(),
            format!("freezeframe-group:{group}"),
        ];
        assert_eq!(sim.snapshot_tags(name), recorded);
        assert_eq!(
            sim.image_tags(volumes[0]["snapshot_id"].as_str().unwrap()),
            recorded
        );
    }

    // The group is deleted whole, by the call `prune --keep-groups` makes of each member:
    // every member's Droplet and volume snapshots.
    for m in &members {
        let out = Command::new("busctl")
            .args(["--address", &m.bus.address, "call", "org.freezeframe.Agent1"])
            .args([
                "/org/freezeframe/Agent1",
                "org.freezeframe.Agent1",
                "DeleteGroups",
            ])
            .args(["as", "1", group])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let sim = &m.droplet.server.sim;
        assert!(sim.snapshot_names().is_empty(), "{:?}", sim.snapshot_names());
        assert!(
            sim.volume_snapshot_names().is_empty(),
            "{:?}",
            sim.volume_snapshot_names()
        );
    }
}
