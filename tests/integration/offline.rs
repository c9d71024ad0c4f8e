//! `freezeframe snapshot --offline` against the simulator's power model: the Droplet shut down
//! cleanly, snapshotted while off, powered on again on every path (a guest that ignores the
//! shutdown, a failure after it, a signal, the CLI killed outright and `recover`).

use crate::droplet::{Droplet, TOKEN};
use crate::service::stderr;
use freezeframe_tests::sim::{Fault, PowerModel};
use freezeframe_tests::*;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ID: &str = "3164444";

/// A Droplet whose guest powers off and boots in `shutdown_takes` and 300 ms, and a folder
/// standing for the user's state directory.
fn droplet(
    shutdown_takes: Duration,
    guest_ignores_shutdown: bool,
    volume: bool,
) -> (Droplet, tempfile::TempDir) {
    let droplet = if volume {
        Droplet::with_volume(Duration::from_millis(200), "", true)
    } else {
        Droplet::new(Duration::from_millis(200), "")
    };
    droplet.server.sim.set_power(PowerModel {
        shutdown_takes,
        guest_ignores_shutdown,
        boot_takes: Duration::from_millis(300),
    });
    (droplet, scratch())
}

/// The CLI as a user runs it against `droplet`'s API, its state in `state`, with `args`.
fn as_user(droplet: &Droplet, state: &tempfile::TempDir, args: &[&str]) -> Command {
    let mut cmd = Command::new(cli_bin());
    cmd.env("DIGITALOCEAN_TOKEN", TOKEN)
        .env("XDG_STATE_HOME", state.path())
        .args(["--api-url", &droplet.server.url])
        .args(args);
    cmd
}

/// As [`as_user`], answering in JSON.
fn freezeframe(droplet: &Droplet, state: &tempfile::TempDir, args: &[&str]) -> Command {
    as_user(droplet, state, &[&["--json"], args].concat())
}

fn offline(droplet: &Droplet, state: &tempfile::TempDir, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = freezeframe(
        droplet,
        state,
        &[&["snapshot", "--offline", "--droplet", ID], extra].concat(),
    )
    .output()
    .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    (out, report)
}

/// A run that failed (exit 1) with an error saying each of `says`.
fn failed_saying(out: &Output, report: &serde_json::Value, says: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(says.iter().all(|s| error.contains(s)), "{says:?}: {report:#}");
}

/// Nothing left recorded or tagged, and the Droplet running.
fn settled(droplet: &Droplet, state: &tempfile::TempDir) {
    assert_eq!(droplet.server.sim.status(), "active");
    let records = state.path().join("freezeframe/offline");
    let left: Vec<_> = std::fs::read_dir(&records)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "records left: {left:?}");
    let tags = droplet.server.sim.droplet_tags();
    assert!(
        !tags.iter().any(|t| t == "freezeframe-offline-pending"),
        "still tagged: {tags:?}"
    );
}

#[test]
fn an_offline_snapshot_shuts_down_snapshots_while_off_and_powers_on() {
    let (droplet, state) = droplet(Duration::from_millis(500), false, true);
    let (out, report) = offline(&droplet, &state, &[]);
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert_eq!(report["consistency"], "offline", "{report:#}");
    assert_eq!(report["hard_power_off"], false);
    assert_eq!(report["running"], true);
    assert!(
        report["snapshot_name"].as_str().unwrap().ends_with("-offline"),
        "{report:#}"
    );
    assert!(report["downtime_ms"].as_f64().unwrap() >= 500.0, "{report:#}");
    assert_eq!(
        report["volume_snapshots"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    let counters = droplet.server.sim.counters();
    assert_eq!(counters.power_actions, ["shutdown", "power_on"]);
    // Recorded on the snapshot and the volume's, after the power-on, as live runs record theirs.
    let sim = &droplet.server.sim;
    assert_eq!(
        sim.snapshot_tags(report["snapshot_name"].as_str().unwrap()),
        ["freezeframe:offline"]
    );
    assert_eq!(
        sim.image_tags(report["volume_snapshots"][0].as_str().unwrap()),
        ["freezeframe:offline"]
    );
    let tagged_at = counters
        .calls
        .iter()
        .position(|c| c.starts_with("POST /v2/tags/freezeframe%3Aoffline"));
    let powered_on_at = counters
        .calls
        .iter()
        .rposition(|c| c == "POST /v2/droplets/3164444/actions");
    assert!(
        tagged_at > powered_on_at,
        "tagged once running: {:?}",
        counters.calls
    );
    assert_eq!((counters.snapshot_posts, counters.volume_snapshot_posts), (1, 1));
    settled(&droplet, &state);

    // --dry-run says what it would do, the volume warned about, and does nothing.
    let out = freezeframe(
        &droplet,
        &state,
        &["snapshot", "--offline", "--dry-run", "--droplet", ID],
    )
    .arg("--force-power-off")
    .output()
    .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{plan:#}{}", stderr(&out));
    assert_eq!(plan["volumes"].as_array().unwrap().len(), 1, "{plan:#}");
    assert!(
        plan["steps"].to_string().contains("power_off (cuts the power)"),
        "{plan:#}"
    );
    let out = as_user(
        &droplet,
        &state,
        &["snapshot", "--offline", "--dry-run", "--droplet", ID],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("attached volume(s), not part of a Droplet snapshot"),
        "{text}"
    );
    assert_eq!(
        droplet.server.sim.counters().power_actions.len(),
        2,
        "nothing more was done"
    );

    // The volume was snapshotted a moment ago: DigitalOcean takes one every 10 minutes, so a
    // second run is refused before the shutdown, not with the Droplet off.
    let (out, report) = offline(&droplet, &state, &[]);
    failed_saying(&out, &report, &["every 10 minutes", "nothing was done"]);
    assert_eq!(report["shut_down"], false, "{report:#}");
    assert_eq!(droplet.server.sim.counters().power_actions.len(), 2);
    settled(&droplet, &state);
}

#[test]
fn a_guest_that_ignores_the_shutdown_is_left_running_or_cut_off_when_allowed() {
    let (droplet, state) = droplet(Duration::from_millis(500), true, false);
    let (out, report) = offline(&droplet, &state, &["--shutdown-timeout", "1s"]);
    failed_saying(
        &out,
        &report,
        &["did not power off within 1s", "--force-power-off"],
    );
    assert_eq!(report["running"], true, "{report:#}");
    let counters = droplet.server.sim.counters();
    assert_eq!(
        counters.power_actions,
        ["shutdown"],
        "never off, never powered on"
    );
    assert_eq!(counters.snapshot_posts, 0, "nothing snapshotted");
    settled(&droplet, &state);

    let (out, report) = offline(
        &droplet,
        &state,
        &["--shutdown-timeout", "1s", "--force-power-off"],
    );
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert_eq!(report["hard_power_off"], true, "{report:#}");
    assert_eq!(report["consistency"], "offline");
    assert_eq!(
        droplet.server.sim.counters().power_actions,
        ["shutdown", "shutdown", "power_off", "power_on"]
    );
    settled(&droplet, &state);
}

#[test]
fn a_failure_after_the_shutdown_powers_the_droplet_on_and_says_what_failed() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, true);
    droplet
        .server
        .sim
        .set_faults(vec!["POST /v2/volumes/=500".parse::<Fault>().unwrap()]);
    let (out, report) = offline(&droplet, &state, &[]);
    failed_saying(&out, &report, &["was not accepted"]);
    assert_eq!(report["running"], true, "{report:#}");
    assert_eq!(
        droplet.server.sim.counters().power_actions,
        ["shutdown", "power_on"]
    );
    settled(&droplet, &state);
}

/// Starts an offline run and waits until the simulator has its shutdown request.
fn started(droplet: &Droplet, state: &tempfile::TempDir) -> Child {
    let before = droplet.server.sim.counters().power_actions.len();
    let child = freezeframe(droplet, state, &["snapshot", "--offline", "--droplet", ID])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while droplet.server.sim.counters().power_actions.len() == before {
        assert!(Instant::now() < deadline, "no shutdown request");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_signal_powers_on_and_a_killed_run_is_recovered_by_recover_or_the_next_run() {
    let (droplet, state) = droplet(Duration::from_secs(2), false, false);

    // SIGINT while the guest shuts down: the run stops waiting and powers the Droplet on.
    let child = started(&droplet, &state);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    failed_saying(&out, &report, &["interrupted"]);
    assert!(
        stderr(&out).contains("powered on again as soon as the platform lets it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(report["running"], true, "{report:#}");
    assert_eq!(droplet.server.sim.counters().snapshot_posts, 0);
    settled(&droplet, &state);

    // SIGKILL: the Droplet stays off, recorded and tagged; `recover` powers it on.
    let mut child = started(&droplet, &state);
    child.kill().unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    while droplet.server.sim.status() != "off" {
        assert!(Instant::now() < deadline, "the guest never powered off");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = freezeframe(&droplet, &state, &["recover"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    settled(&droplet, &state);

    // Killed again: the next offline run warns, powers it on first, and takes its snapshot.
    let mut child = started(&droplet, &state);
    child.kill().unwrap();
    let _ = child.wait();
    let (out, report) = offline(&droplet, &state, &[]);
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert!(stderr(&out).contains("did not finish"), "{}", stderr(&out));
    assert_eq!(report["consistency"], "offline");
    settled(&droplet, &state);
}

#[test]
fn offline_needs_droplets_by_id_or_tag_and_a_token() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    let out = freezeframe(&droplet, &state, &["--ssh-command", "false", "-H", "nosuchhost"])
        .args(["snapshot", "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no Droplet of this account has that public address or name"),
        "{}",
        stderr(&out)
    );
    let out = freezeframe(&droplet, &state, &["snapshot", "--offline", "--droplet", ID])
        .env_remove("DIGITALOCEAN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set DIGITALOCEAN_TOKEN"),
        "{}",
        stderr(&out)
    );
    assert!(droplet.server.sim.counters().power_actions.is_empty());
}

#[test]
fn hosts_are_found_by_name_and_their_agents_waited_for_and_one_failure_spares_the_others() {
    use freezeframe_digitalocean::{http_client, Client, Token};
    use freezeframe_tests::bus::fake_ssh;
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    let member = crate::fleet::serve(droplet);
    let droplet = &member.droplet;
    // -H web-1: the agent names no Droplet (metadata would), so the API's Droplet of that name.
    let ssh = fake_ssh(droplet.dir.path(), &[("web-1", &member.bus)]);
    let out = freezeframe(droplet, &state, &["--ssh-command", ssh.to_str().unwrap()])
        .args(["-H", "web-1", "snapshot", "--offline"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)));
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert_eq!(report["droplet_id"], 3164444);
    let (down, agent) = (
        report["downtime_ms"].as_f64().unwrap(),
        report["agent_downtime_ms"].as_f64().unwrap(),
    );
    assert!(agent >= down, "the agent answers after the boot: {report:#}");
    assert_eq!(
        report["databases"],
        serde_json::json!([]),
        "the agent was asked what it would quiesce (nothing here): {report:#}"
    );
    settled(droplet, &state);
    let out = as_user(droplet, &state, &["--ssh-command", ssh.to_str().unwrap()])
        .args(["-H", "web-1", "snapshot", "--offline", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("its agent would quiesce nothing"),
        "{text}{}",
        stderr(&out)
    );

    // --tag, and a Droplet that does not exist: that one fails, the tagged one is done.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(
        http_client(&droplet.server.url).unwrap(),
        &droplet.server.url,
        Token::new(TOKEN),
        &["tag:create"],
        Duration::from_secs(10),
    );
    rt.block_on(client.tag_droplet("db", 3164444)).unwrap();
    // (The tagged Droplet's public address is not the stand-in's: no agent is waited for.)
    let out = freezeframe(droplet, &state, &["--ssh-command", ssh.to_str().unwrap()])
        .args(["--tag", "db", "snapshot", "--offline", "--droplet", "4040404"])
        .output()
        .unwrap();
    // A Droplet that does not exist is the user's to fix (2), the worst of the two runs.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let missing = reports.iter().find(|r| r["droplet_id"] == 4040404).unwrap();
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("no Droplet 4040404 in this account"),
        "{missing:#}"
    );
    assert_eq!(missing["exit"], 2, "{missing:#}");
    assert_eq!(missing["shut_down"], false);
    let tagged = reports.iter().find(|r| r["droplet_id"] == 3164444).unwrap();
    assert_eq!(tagged["consistency"], "offline", "{tagged:#}");
    settled(droplet, &state);
}

/// The POSTs that reached the Droplet's actions (power actions and snapshots, taken or not).
fn action_posts(droplet: &Droplet) -> usize {
    let calls = droplet.server.sim.counters().calls;
    calls
        .iter()
        .filter(|c| *c == &format!("POST /v2/droplets/{ID}/actions"))
        .count()
}

/// An offline run whose power-on meets `faults` (the simulator's `--power-fault`): it succeeds,
/// with the Droplet running and nothing left recorded or tagged, and `power_on` taken once.
fn powered_on_despite(faults: &[&str], extra: &[&str]) -> (Droplet, serde_json::Value, String) {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    droplet
        .server
        .sim
        .set_power_faults(faults.iter().map(|f| f.parse().unwrap()).collect());
    let (out, report) = offline(&droplet, &state, extra);
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert_eq!(report["running"], true, "{report:#}");
    assert_eq!(report["consistency"], "offline", "{report:#}");
    assert_eq!(
        droplet.server.sim.counters().power_actions,
        ["shutdown", "power_on"]
    );
    settled(&droplet, &state);
    (droplet, report, stderr(&out))
}

#[test]
fn a_power_on_refused_with_500_is_tried_again_until_the_droplet_runs() {
    let (droplet, _, stderr) = powered_on_despite(&["power_on=500*3"], &[]);
    assert!(stderr.contains("trying again"), "{stderr}");
    // shutdown, snapshot, three refused power_on and the one taken.
    assert_eq!(action_posts(&droplet), 6);
}

#[test]
fn a_power_on_rate_limited_past_a_minute_waits_as_long_as_the_api_asks() {
    let (droplet, report, stderr) = powered_on_despite(&["power_on=429:61*1"], &[]);
    assert!(stderr.contains("rate-limiting"), "{stderr}");
    assert_eq!(action_posts(&droplet), 4, "asked once more, after the wait");
    let power_on = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "power_on")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert!(
        power_on["ms"].as_f64().unwrap() >= 61_000.0,
        "retry-after honoured: {report:#}"
    );
}

#[test]
fn a_power_on_left_unanswered_is_sent_again_only_if_the_platform_did_not_take_it() {
    // Not taken: after the client's timeout, the Droplet reads off, so power_on is sent again.
    let (droplet, _, _) = powered_on_despite(&["power_on=hang*1"], &[]);
    assert_eq!(action_posts(&droplet), 4);
    // Taken, its answer lost: the Droplet reads booting or running, and nothing is sent again.
    let (droplet, _, _) = powered_on_despite(&["power_on=lost*1"], &[]);
    assert_eq!(
        action_posts(&droplet),
        3,
        "{:?}",
        droplet.server.sim.counters().calls
    );
}

#[test]
fn failed_reads_of_the_droplet_after_its_snapshot_do_not_leave_it_off() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    // Twice the client's own four attempts: two reads fail whole after the snapshot.
    droplet
        .server
        .sim
        .faults_after_snapshot(vec![format!("GET /v2/droplets/{ID}=500*8").parse().unwrap()]);
    let (out, report) = offline(&droplet, &state, &[]);
    assert!(out.status.success(), "{report:#}{}", stderr(&out));
    assert_eq!(report["running"], true, "{report:#}");
    settled(&droplet, &state);
}

#[test]
fn past_the_power_on_deadline_the_droplet_is_left_recorded_and_recover_says_so_loudly() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    droplet
        .server
        .sim
        .set_power_faults(vec!["power_on=500".parse().unwrap()]);
    let (out, report) = offline(&droplet, &state, &["--power-on-deadline", "3s"]);
    failed_saying(
        &out,
        &report,
        &[
            "left OFF",
            "within 3s (--power-on-deadline)",
            "freezeframe recover",
        ],
    );
    assert!(
        stderr(&out).contains("left OFF"),
        "said at once: {}",
        stderr(&out)
    );
    assert_eq!(report["running"], false, "{report:#}");
    assert_eq!(droplet.server.sim.status(), "off");
    assert!(droplet
        .server
        .sim
        .droplet_tags()
        .iter()
        .any(|t| t == "freezeframe-offline-pending"));
    assert!(state
        .path()
        .join(format!("freezeframe/offline/{ID}.json"))
        .exists());
    // Once the API takes it, `recover` powers it on and clears the record.
    droplet.server.sim.set_power_faults(Vec::new());
    let out = freezeframe(&droplet, &state, &["recover"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    settled(&droplet, &state);
}

#[test]
fn a_host_whose_agent_names_another_droplet_has_nothing_powered_off() {
    use freezeframe_tests::bus::fake_ssh;
    use freezeframe_tests::sim::FleetDroplet;
    // The agent on the host the operator names says it is Droplet 3164444 (the simulator's
    // Droplet, which power actions reach), but the host is another Droplet of the account.
    let member = crate::fleet::serve(Droplet::new(
        Duration::from_millis(200),
        &format!("droplet_id = {ID}\n"),
    ));
    let droplet = &member.droplet;
    let state = scratch();
    droplet.server.sim.list_also(FleetDroplet {
        id: 4040405,
        name: "web-2".into(),
        tags: Vec::new(),
        public_ipv4: "192.0.2.52".into(),
    });
    let hosts = ["web-2", "192.0.2.52", "web-9", "web-1"];
    let ssh = fake_ssh(droplet.dir.path(), &hosts.map(|h| (h, &member.bus)));
    let ssh = ssh.to_str().unwrap();
    for (host, says) in [
        ("web-2", "but by the API web-2 is Droplet 4040405"),
        ("192.0.2.52", "but by the API 192.0.2.52 is Droplet 4040405"),
        ("web-9", "the API cannot confirm it"),
    ] {
        // With --droplet too: nothing is powered off at all, not even the Droplet named by id.
        let out = freezeframe(droplet, &state, &["--ssh-command", ssh, "-H", host])
            .args(["snapshot", "--offline", "--droplet", ID])
            .output()
            .unwrap();
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{host}: {said}");
        for words in [
            says,
            &format!("its agent says it is Droplet {ID}"),
            "nothing was powered off",
            "--droplet ID",
        ] {
            assert!(said.contains(words), "{host}: `{words}` in {said}");
        }
        assert!(droplet.server.sim.counters().power_actions.is_empty(), "{host}");
        assert_eq!(droplet.server.sim.status(), "active");
    }
    // The host the API says is that Droplet: its agent's word agrees, and the plan is made.
    let out = freezeframe(droplet, &state, &["--ssh-command", ssh, "-H", "web-1"])
        .args(["snapshot", "--offline", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["droplet_id"], 3164444, "{plan:#}");
    assert!(droplet.server.sim.counters().power_actions.is_empty());
}

/// Every JSON document on `out`'s stdout (one per Droplet, or one array of them).
fn documents(out: &Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<serde_json::Value>()
        .map(|d| d.unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout))))
        .flat_map(|d| match d {
            serde_json::Value::Array(all) => all,
            // `recover`'s one document.
            serde_json::Value::Object(mut one) if one.contains_key("droplets") => {
                match one.remove("droplets") {
                    Some(serde_json::Value::Array(all)) => all,
                    _ => Vec::new(),
                }
            }
            one => vec![one],
        })
        .collect()
}

/// Records keep the API and account a run had (never its token) and the snapshot it took;
/// `recover` powers on only its own API's and account's, keeps and names the others, clears the
/// record of a Droplet that no longer exists, and says where each record lives.
#[test]
fn recover_keeps_other_accounts_records_clears_those_of_gone_droplets_and_names_the_file() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    droplet
        .server
        .sim
        .set_power_faults(vec!["power_on=500".parse().unwrap()]);
    let (out, report) = offline(&droplet, &state, &["--power-on-deadline", "3s"]);
    let records = state.path().join("freezeframe/offline");
    let own = records.join(format!("{ID}.json"));
    failed_saying(&out, &report, &["left OFF", &format!("`rm {}`", own.display())]);
    let snapshot = report["snapshot_name"].as_str().unwrap().to_string();
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(&own).unwrap()).unwrap();
    assert_eq!(recorded["api_url"], droplet.server.url.as_str(), "{recorded:#}");
    assert_eq!(
        recorded["account"], "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
        "{recorded:#}"
    );
    assert_eq!(recorded["snapshot_name"], snapshot.as_str(), "{recorded:#}");
    assert!(!recorded.to_string().contains(TOKEN), "{recorded:#}");

    // Another account's record, another API's, and an old record (no API, no account) of a
    // Droplet that is gone.
    let write = |id: u64, extra: &str| {
        std::fs::write(
            records.join(format!("{id}.json")),
            format!(
                r#"{{"droplet_id": {id}, "droplet_name": "d{id}", "since": "2026-12-01T00:00:00Z"{extra}}}"#
            ),
        )
        .unwrap()
    };
    write(
        777,
        &format!(
            r#", "api_url": "{}", "account": "another-account""#,
            droplet.server.url
        ),
    );
    write(
        888,
        r#", "api_url": "https://api.elsewhere.example", "account": "another-account""#,
    );
    write(999, "");

    droplet.server.sim.set_power_faults(Vec::new());
    let out = freezeframe(&droplet, &state, &["recover"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let reports = documents(&out);
    let of = |id: u64| {
        reports
            .iter()
            .find(|r| r["droplet_id"] == id)
            .unwrap_or_else(|| panic!("no report of {id}: {reports:#?}"))
    };
    let ours = of(3164444);
    assert_eq!(ours["succeeded"], true, "{ours:#}");
    assert_eq!(ours["running"], true, "{ours:#}");
    assert_eq!(ours["shut_down"], true, "{ours:#}");
    assert_eq!(ours["droplet_name"], "web-1", "{ours:#}");
    assert_eq!(ours["snapshot_name"], snapshot.as_str(), "{ours:#}");
    for (id, why) in [
        (777, "another account"),
        (888, "against the API at https://api.elsewhere.example"),
    ] {
        let kept = of(id);
        let error = kept["error"].as_str().unwrap_or_default();
        let file = records.join(format!("{id}.json"));
        assert!(
            error.contains("is not tried")
                && error.contains(why)
                && error.contains(&format!("`rm {}`", file.display())),
            "{kept:#}"
        );
        assert!(file.exists(), "the record of {id} is kept");
    }
    let gone = of(999);
    assert_eq!(gone["succeeded"], true, "{gone:#}");
    assert!(
        gone["warnings"].to_string().contains("no longer exists"),
        "{gone:#}"
    );
    assert!(
        !records.join("999.json").exists(),
        "the record of a Droplet that is gone is cleared"
    );
    assert!(!own.exists());
    assert_eq!(droplet.server.sim.status(), "active");
    // As text, the record still kept is named with how to drop it.
    let out = as_user(&droplet, &state, &["recover"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Droplet 777: FAILED")
            && text.contains(&format!("`rm {}`", records.join("777.json").display())),
        "{text}"
    );
}

/// Where an offline run is when the test interrupts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the Droplet and its actions, nothing recorded yet.
    Preflight,
    /// Waiting for the guest to power off.
    ShutdownWait,
    /// Waiting for the snapshot action, the Droplet off.
    SnapshotWait,
    /// Waiting for the Droplet to boot after power_on.
    PowerOnWait,
}

/// What the simulator has seen of a run so far.
struct Seen {
    droplet_reads: usize,
    power_actions: Vec<String>,
    snapshot_posts: u32,
}

impl Seen {
    fn now(droplet: &Droplet) -> Seen {
        let counters = droplet.server.sim.counters();
        Seen {
            droplet_reads: counters
                .calls
                .iter()
                .filter(|c| *c == &format!("GET /v2/droplets/{ID}"))
                .count(),
            power_actions: counters.power_actions,
            snapshot_posts: counters.snapshot_posts,
        }
    }
}

impl Step {
    const ALL: [Step; 4] = [
        Step::Preflight,
        Step::ShutdownWait,
        Step::SnapshotWait,
        Step::PowerOnWait,
    ];

    /// Makes this step last seconds in the simulator, and every other one short.
    fn arrange(self, droplet: &Droplet) {
        let sim = &droplet.server.sim;
        let long = Duration::from_secs(4);
        let short = Duration::from_millis(300);
        let pick = |step: Step| if step == self { long } else { short };
        sim.set_power(PowerModel {
            shutdown_takes: pick(Step::ShutdownWait),
            guest_ignores_shutdown: false,
            boot_takes: pick(Step::PowerOnWait),
        });
        sim.set_action_delay(pick(Step::SnapshotWait));
        let preflight = format!("GET /v2/droplets/{ID}/actions=latency:4000*1");
        sim.set_faults(match self {
            Step::Preflight => vec![preflight.parse::<Fault>().unwrap()],
            _ => Vec::new(),
        });
    }

    /// Whether the run reached this step, against what was seen before it started.
    fn reached(self, droplet: &Droplet, before: &Seen) -> bool {
        let now = Seen::now(droplet);
        let new_power = &now.power_actions[before.power_actions.len()..];
        match self {
            Step::Preflight => now.droplet_reads > before.droplet_reads,
            Step::ShutdownWait => new_power.iter().any(|a| a == "shutdown"),
            Step::SnapshotWait => now.snapshot_posts > before.snapshot_posts,
            Step::PowerOnWait => new_power.iter().any(|a| a == "power_on"),
        }
    }
}

/// The run's one document, whatever ended it.
fn report_of_run(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), stderr(out)))
}

#[test]
fn interrupted_or_killed_at_each_step_the_droplet_runs_or_recover_powers_exactly_it_on() {
    use nix::sys::signal::Signal;
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    for step in Step::ALL {
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
            let case = format!("{signal} at {step:?}");
            step.arrange(&droplet);
            let before = Seen::now(&droplet);
            let child = freezeframe(&droplet, &state, &["snapshot", "--offline", "--droplet", ID])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !step.reached(&droplet, &before) {
                assert!(Instant::now() < deadline, "{case}: never reached");
                std::thread::sleep(Duration::from_millis(20));
            }
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
            let out = child.wait_with_output().unwrap();
            let after = Seen::now(&droplet);
            let shut_down = after.power_actions.len() > before.power_actions.len();
            if signal == Signal::SIGKILL {
                // What recover powers on is exactly what the run left: nothing before the
                // shutdown, this Droplet after it.
                let out = freezeframe(&droplet, &state, &["recover"]).output().unwrap();
                let recovered = report_of_run(&out);
                assert!(out.status.success(), "{case}: {recovered:#}{}", stderr(&out));
                let ids: Vec<u64> = recovered["droplets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["droplet_id"].as_u64().unwrap())
                    .collect();
                let expected: Vec<u64> = if step == Step::Preflight {
                    vec![]
                } else {
                    vec![ID.parse().unwrap()]
                };
                assert_eq!(ids, expected, "{case}: {recovered:#}");
                assert!(
                    recovered["droplets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|d| d["running"] == true),
                    "{case}: {recovered:#}"
                );
            } else {
                let report = report_of_run(&out);
                assert_eq!(report["running"], true, "{case}: {report:#}{}", stderr(&out));
                if matches!(step, Step::Preflight | Step::ShutdownWait) {
                    failed_saying(&out, &report, &["interrupted"]);
                    assert_eq!(after.snapshot_posts, before.snapshot_posts, "{case}");
                }
            }
            assert_eq!(
                shut_down,
                step != Step::Preflight,
                "{case}: {:?}",
                after.power_actions
            );
            settled(&droplet, &state);
        }
    }
}

#[test]
fn a_snapshot_action_that_errors_after_the_shutdown_powers_the_droplet_on_and_says_so() {
    let (droplet, state) = droplet(Duration::from_millis(300), false, false);
    droplet.server.sim.fail_snapshots(1);
    let (out, report) = offline(&droplet, &state, &[]);
    failed_saying(&out, &report, &["errored on DigitalOcean's side"]);
    assert_eq!(report["running"], true, "{report:#}");
    assert!(
        report["consistency"].is_null(),
        "no snapshot, no level: {report:#}"
    );
    assert_eq!(
        droplet.server.sim.counters().power_actions,
        ["shutdown", "power_on"]
    );
    assert!(droplet.server.sim.snapshot_names().is_empty());
    settled(&droplet, &state);
}
