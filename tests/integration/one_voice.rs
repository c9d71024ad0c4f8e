//! The interface's promises, held by running the binaries: `--json` prints exactly one JSON
//! document on stdout on every path (per machine where a command runs on several), failures
//! included; an agent out of reach is one diagnosis, with its fix, whichever command met it;
//! and the exit codes are the table's (contract/src/exit.rs) for both programs.

use crate::droplet::TOKEN;
use crate::service::{stderr, Served};
use freezeframe_tests::bus::{fake_ssh, PrivateBus};
use freezeframe_tests::sim::{Capture, SimConfig};
use freezeframe_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Every JSON document on `out`'s stdout; panics on text that is not JSON.
fn documents(out: &Output) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                stderr(out)
            )
        })
}

/// The one JSON document on `out`'s stdout, of a run that exited `exit`.
fn one_document(what: &str, out: &Output, exit: i32) -> serde_json::Value {
    let mut all = documents(out);
    assert_eq!(
        all.len(),
        1,
        "{what}: not exactly one JSON document: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    assert_eq!(out.status.code(), Some(exit), "{what}: {}", stderr(out));
    all.remove(0)
}

/// A failure's document: it says the error and the exit it ended with.
fn failure_document(what: &str, out: &Output, exit: i32) -> serde_json::Value {
    let document = one_document(what, out, exit);
    assert_eq!(document["exit"], exit, "{what}: {document:#}");
    assert!(
        document["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {document:#}"
    );
    document
}

/// Where the CLI's runs here are kept from this machine: no system bus (a socket that does not
/// exist), no real API (the simulator's, or an address nothing listens on), no user state.
struct Walk {
    dir: tempfile::TempDir,
    sim: SimServer,
    empty_bus: PrivateBus,
    ssh: PathBuf,
}

impl Walk {
    fn new() -> Walk {
        let dir = scratch();
        let images = dir.path().join("sim-images");
        std::fs::create_dir_all(&images).unwrap();
        let sim = SimServer::start(SimConfig {
            token: TOKEN.into(),
            droplet_id: 3164444,
            droplet_name: "web-1".into(),
            disk: None,
            image_dir: images,
            action_delay: Duration::from_millis(100),
            capture: Capture::Registration,
            latency: Duration::ZERO,
            faults: Vec::new(),
            volumes: Vec::new(),
            fleet: Vec::new(),
            rate_limit: None,
        });
        let empty_bus = PrivateBus::start(&dir.path().join("bus")).expect("start a private bus");
        // Knows no host: every -H fails as ssh does for a name it cannot resolve.
        let ssh = fake_ssh(dir.path(), &[]);
        Walk {
            dir,
            sim,
            empty_bus,
            ssh,
        }
    }

    fn no_bus(&self) -> String {
        format!("unix:path={}", self.dir.path().join("no-bus").display())
    }

    /// `freezeframe ARGS…` with `token` as DIGITALOCEAN_TOKEN (none: unset).
    fn cli(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(cli_bin());
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", self.no_bus())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env_remove("DIGITALOCEAN_TOKEN")
            .args(["--ssh-command", self.ssh.to_str().unwrap()]);
        if !args.contains(&"--api-url") {
            cmd.args(["--api-url", &self.sim.url]);
        }
        cmd.args(args);
        if let Some(token) = token {
            cmd.env("DIGITALOCEAN_TOKEN", token);
        }
        cmd.output().unwrap()
    }
}

#[test]
fn every_command_with_json_prints_one_document_on_each_failure_path() {
    let walk = Walk::new();
    let (no_bus, empty) = (walk.no_bus(), walk.empty_bus.address.clone());
    let man_dir = walk.dir.path().join("man");
    let man_dir = man_dir.to_str().unwrap();
    let refused = Some("dop_v1_refused");
    let good = Some(TOKEN);
    // (what, token, arguments, exit)
    let cases: Vec<(&str, Option<&str>, Vec<&str>, i32)> = vec![
        // No bus, and a bus without the agent: every command that asks an agent.
        (
            "status, no bus",
            None,
            vec!["--bus-address", &no_bus, "status"],
            3,
        ),
        ("status, no system bus", None, vec!["status"], 3),
        (
            "status, no agent",
            None,
            vec!["--bus-address", &empty, "status"],
            3,
        ),
        ("plan, no agent", None, vec!["--bus-address", &empty, "plan"], 3),
        ("list, no agent", None, vec!["--bus-address", &empty, "list"], 3),
        (
            "prune, no agent",
            None,
            vec!["--bus-address", &empty, "prune", "--keep", "1"],
            3,
        ),
        (
            "snapshot, no agent",
            None,
            vec!["--bus-address", &empty, "snapshot"],
            3,
        ),
        (
            "snapshot --dry-run, no agent",
            None,
            vec!["--bus-address", &empty, "snapshot", "--dry-run"],
            3,
        ),
        ("thaw, no agent", None, vec!["--bus-address", &empty, "thaw"], 3),
        ("status over ssh that fails", None, vec!["-H", "db1", "status"], 3),
        (
            "prune --keep-groups over ssh that fails",
            None,
            vec!["-H", "db1", "-H", "db2", "prune", "--keep-groups", "1"],
            3,
        ),
        // The API's commands: no token, a refused token, a Droplet that does not exist.
        ("--tag, no token", None, vec!["--tag", "prod", "status"], 2),
        (
            "--tag, refused token",
            refused,
            vec!["--tag", "prod", "status"],
            2,
        ),
        (
            "snapshot --offline, no token",
            None,
            vec!["snapshot", "--offline", "--droplet", "3164444"],
            2,
        ),
        (
            "snapshot --offline --dry-run, refused token",
            refused,
            vec!["snapshot", "--offline", "--dry-run", "--droplet", "3164444"],
            2,
        ),
        (
            "snapshot --offline, refused token",
            refused,
            vec!["snapshot", "--offline", "--droplet", "3164444"],
            2,
        ),
        (
            "snapshot --offline, no such Droplet",
            good,
            vec!["snapshot", "--offline", "--droplet", "999"],
            2,
        ),
        (
            "snapshot --offline --dry-run, no such Droplet",
            good,
            vec!["snapshot", "--offline", "--dry-run", "--droplet", "999"],
            2,
        ),
        ("recover, no token", None, vec!["recover"], 2),
        ("recover, refused token", refused, vec!["recover"], 2),
        (
            "verify, no token",
            None,
            vec!["verify", "some-snapshot", "--yes"],
            2,
        ),
        ("verify --cleanup, no token", None, vec!["verify", "--cleanup"], 2),
        // Bad input.
        ("an unknown option", None, vec!["status", "--bogus"], 2),
        ("an unknown command", None, vec!["frobnicate"], 2),
        ("a bad group id", None, vec!["list", "--group", "nope"], 2),
        (
            "a plain-http API",
            None,
            vec!["--api-url", "http://example.com", "status"],
            2,
        ),
        (
            "verify with -H",
            None,
            vec!["-H", "db1", "verify", "some-snapshot"],
            2,
        ),
        ("completions", None, vec!["completions", "bash"], 2),
        ("man", None, vec!["man", man_dir], 2),
    ];
    for (what, token, args, exit) in &cases {
        let out = walk.cli(*token, &[&["--json"], args.as_slice()].concat());
        failure_document(what, &out, *exit);
    }

    // doctor: its checks are the document, the failed one with its fix.
    for (what, bus, step) in [("no bus", &no_bus, "bus"), ("no agent", &empty, "agent")] {
        let out = walk.cli(None, &["--json", "--bus-address", bus, "doctor"]);
        let document = one_document(&format!("doctor, {what}"), &out, 3);
        let checks = document["checks"].as_array().unwrap();
        let failed = checks.last().unwrap();
        assert_eq!(
            (&failed["name"], &failed["ok"]),
            (&step.into(), &false.into()),
            "{document:#}"
        );
        assert!(!failed["fix"].as_str().unwrap().is_empty(), "{document:#}");
    }
    // recover with nothing to recover: one document, none recovered.
    let out = walk.cli(good, &["--json", "recover"]);
    let document = one_document("recover, nothing to recover", &out, 0);
    assert_eq!(document["droplets"], serde_json::json!([]), "{document:#}");
    // A group: its one result, however its members failed.
    let out = walk.cli(None, &["--json", "-H", "db1", "-H", "db2", "snapshot", "--group"]);
    let document = one_document("snapshot --group over ssh that fails", &out, 3);
    assert!(document["aborted"].is_string(), "{document:#}");
    // Several machines: one document per machine, each with its exit.
    let out = walk.cli(None, &["--json", "-H", "db1", "-H", "db2", "status"]);
    let all = documents(&out);
    assert_eq!(all.len(), 2, "one per machine: {all:#?}");
    assert!(
        all.iter().all(|d| d["exit"] == 3 && d["step"] == "ssh"),
        "{all:#?}"
    );
    assert_eq!(out.status.code(), Some(3));

    // The agent's own commands with --json.
    let missing = walk.dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let agent_cases: [(&str, Vec<&str>, i32); 5] = [
        (
            "snapshot, no configuration",
            vec!["--config", missing, "snapshot", "--json"],
            2,
        ),
        (
            "plan, no configuration",
            vec!["--config", missing, "plan", "--json"],
            2,
        ),
        (
            "snapshot, an unknown option",
            vec!["snapshot", "--json", "--bogus"],
            2,
        ),
        (
            "snapshot, a bad name",
            vec!["snapshot", "--json", "--name", "a/b"],
            2,
        ),
        (
            "verify, no image",
            vec!["verify", "--json", "--image", "/nonexistent/image.img"],
            2,
        ),
    ];
    for (what, args, exit) in agent_cases {
        let out = Command::new(agent_bin())
            .env("DBUS_SYSTEM_BUS_ADDRESS", walk.no_bus())
            .args(args)
            .output()
            .unwrap();
        failure_document(&format!("freezeframe-agent {what}"), &out, exit);
    }
}

/// An agent that knows the interface's name and nothing of today's calls: an older agent.
struct OldAgent;

#[zbus::interface(name = "org.freezeframe.Agent1")]
impl OldAgent {
    #[zbus(property)]
    fn version(&self) -> String {
        "0.0.1".into()
    }
}

/// A connection owning the agent's name on `address` (serving [`OldAgent`]), kept open.
struct Owner {
    _connection: zbus::Connection,
    _runtime: tokio::runtime::Runtime,
}

impl Owner {
    fn on(address: &str) -> Owner {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connection = runtime.block_on(async {
            zbus::connection::Builder::address(address)
                .name("org.freezeframe.Agent1")
                .serve_at("/org/freezeframe/Agent1", OldAgent)
                .build()
                .await
                .expect("own the agent's name")
        });
        Owner {
            _connection: connection,
            _runtime: runtime,
        }
    }
}

/// A bus whose policy lets root own the agent's name but lets nobody call it.
fn refusing_bus(dir: &Path) -> PrivateBus {
    let policy = dir.join("policy.conf");
    std::fs::write(
        &policy,
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n  \
         <policy user=\"root\"><allow own=\"org.freezeframe.Agent1\"/></policy>\n</busconfig>\n",
    )
    .unwrap();
    PrivateBus::system_like(&dir.join("bus"), &policy, None).expect("start a refusing bus")
}

#[test]
fn an_agent_out_of_reach_is_one_diagnosis_with_its_fix_for_every_command() {
    require_root();
    let walk = Walk::new();
    let old_dir = scratch();
    let old_bus = PrivateBus::start(&old_dir.path().join("bus")).unwrap();
    let _old = Owner::on(&old_bus.address);
    let refusing_dir = scratch();
    let refusing = refusing_bus(refusing_dir.path());
    let _owner = Owner::on(&refusing.address);
    // (state, where, what every command says, the fix, step, exit)
    type State<'a> = (&'a str, Option<&'a str>, &'a str, &'a str, &'a str, i32);
    let states: [State; 4] = [
        (
            "no system bus",
            None,
            "no D-Bus bus answers there",
            "systemctl start dbus",
            "bus",
            3,
        ),
        (
            "agent not on the bus",
            Some(&walk.empty_bus.address),
            "the agent is not on the bus",
            "install the package freezeframe-agent",
            "agent",
            3,
        ),
        (
            "access denied",
            Some(&refusing.address),
            "access denied",
            "add the user to the group `freezeframe`",
            "authorisation",
            2,
        ),
        (
            "agent too old",
            Some(&old_bus.address),
            "the agent does not understand this client",
            "install the same version of freezeframe and freezeframe-agent",
            "version",
            3,
        ),
    ];
    for (state, address, says, fix, step, exit) in states {
        let at: Vec<&str> = address.map(|a| vec!["--bus-address", a]).unwrap_or_default();
        for command in ["status", "snapshot", "list"] {
            let what = format!("{command}, {state}");
            let out = walk.cli(None, &[at.as_slice(), &[command]].concat());
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(exit), "{what}: {err}");
            assert!(err.contains(says) && err.contains(fix), "{what}: {err}");
            let out = walk.cli(None, &[at.as_slice(), &["--json", command]].concat());
            let document = failure_document(&what, &out, exit);
            assert_eq!(document["step"], step, "{what}: {document:#}");
        }
        let out = walk.cli(None, &[at.as_slice(), &["doctor"]].concat());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(exit), "doctor, {state}: {text}");
        let check = if step == "bus" { "bus" } else { "agent" };
        assert!(
            text.contains(&format!("✗ {check}: {says}")) && text.contains("fix: ") && text.contains(fix),
            "doctor, {state}: {text}"
        );
        assert!(!text.contains("zbus"), "doctor, {state}: {text}");
    }
}

#[test]
fn a_busy_agent_is_75_for_a_fleet_too() {
    // The local-image copy sleeps inside the window, so the first snapshot is still running.
    // (Long enough for the four calls below on a loaded machine, below the configuration's
    // max_freeze of 20 s; the test waits it out.)
    let served = Served::start("", &[("FAILPOINTS", "local-image-copy=sleep(10000)")]);
    let first = Command::new(cli_bin())
        .args(["--bus-address", &served.bus.address, "snapshot"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    served
        .notify
        .wait_for_status("frozen", Duration::from_secs(30), || None);
    let dir = scratch();
    let ssh = fake_ssh(dir.path(), &[("db1", &served.bus), ("db2", &served.bus)]);
    for args in [
        vec!["snapshot"],
        vec!["-H", "db1", "-H", "db2", "snapshot"],
        vec!["prune", "--keep", "1"],
        vec!["thaw"],
        vec!["doctor"],
    ] {
        let out = Command::new(cli_bin())
            .args(["--ssh-command", ssh.to_str().unwrap()])
            .args(if args.contains(&"-H") {
                vec![]
            } else {
                vec!["--bus-address", &served.bus.address]
            })
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(75), "{args:?}: {}", stderr(&out));
    }
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
}

#[test]
fn a_frozen_image_dir_and_a_taken_name_are_configuration_errors() {
    let fs = scratch_fs(Fs::Ext4);
    let snapshot = |config: &Path, args: &[&str]| -> (Output, serde_json::Value) {
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(config)
            .args(["snapshot", "--json"])
            .args(args)
            .output()
            .unwrap();
        let report = one_document("snapshot", &out, out.status.code().unwrap_or(-1));
        (out, report)
    };
    let config = local_image_config(&fs, "");
    let (out, report) = snapshot(&config, &["--name", "taken"]);
    assert!(out.status.success(), "{report:#}");
    let (out, report) = snapshot(&config, &["--name", "taken"]);
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    assert_eq!(report["setup_error"], true, "{report:#}");
    assert!(
        report["error"].as_str().unwrap().contains("already exists"),
        "{report:#}"
    );
    // image_dir on the filesystem that is frozen.
    let text = std::fs::read_to_string(&config).unwrap();
    let images = fs.dir.path().join("images").display().to_string();
    let inside = fs.mountpoint.join("images").display().to_string();
    std::fs::write(
        &config,
        text.replace(&format!("{images:?}"), &format!("{inside:?}")),
    )
    .unwrap();
    let (out, report) = snapshot(&config, &[]);
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("which is frozen while the images are written"),
        "{report:#}"
    );
    assert!(!is_frozen(&fs.mountpoint));
}
