//! A fleet of 50 Droplets sharing one token, whose rate limit the simulators enforce together
//! (lowered from the real API's): `freezeframe -H … snapshot` paces the runs to `--api-rate`,
//! and no request inside a frozen window meets a 429.

use crate::droplet::Droplet;
use crate::service::stderr;
use freezeframe_tests::bus::{fake_ssh, PrivateBus};
use freezeframe_tests::sim::RateLimit;
use freezeframe_tests::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A Droplet of the fleet with its agent serving a private bus.
struct Member {
    agent: Child,
    bus: PrivateBus,
    droplet: Droplet,
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
    let droplet = Droplet::in_fleet(limit.clone());
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

#[test]
fn a_fleet_sharing_a_token_is_paced_under_its_rate_limit_and_no_window_meets_a_429() {
    require_root();
    // 300 calls a minute for the whole account; the fleet is told it may use 250.
    let limit = RateLimit::new(300, 5000);
    let members: Vec<Member> = (0..50).map(|_| member(&limit)).collect();
    let names: Vec<String> = (0..members.len()).map(|i| format!("droplet-{i}")).collect();
    let hosts: Vec<(&str, &PrivateBus)> = names
        .iter()
        .map(String::as_str)
        .zip(members.iter().map(|m| &m.bus))
        .collect();
    let ssh = fake_ssh(members[0].droplet.dir.path(), &hosts);
    let mut cmd = Command::new(cli_bin());
    cmd.args(["--ssh-command", ssh.to_str().unwrap(), "--api-rate", "250"]);
    for name in &names {
        cmd.args(["-H", name]);
    }
    let started = Instant::now();
    let out = cmd.arg("snapshot").output().unwrap();
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

    let refused: Vec<String> = members
        .iter()
        .flat_map(|m| m.droplet.server.sim.counters().rate_limited)
        .collect();
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
