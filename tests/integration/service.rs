//! The agent as a D-Bus service (`freezeframe-agent run`) on a private `dbus-daemon`, driven by
//! the `freezeframe` CLI: locally by bus address, remotely through a stand-in for ssh that
//! execs `systemd-stdio-bridge`, and as a fleet. Typed errors, caller checks (a second uid), the
//! packaged bus policy, D-Bus activation and idle exit.

use freezeframe_tests::bus::{activated_bus, agents_serving, fake_ssh, PrivateBus};
use freezeframe_tests::*;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// An agent serving a private bus and freezing one scratch filesystem. Fields drop in order:
/// the agent stops before its bus, both before the filesystem.
pub(crate) struct Served {
    agent: Option<Child>,
    /// The agent's NOTIFY_SOCKET: its status says when it is frozen.
    pub(crate) notify: NotifySocket,
    pub(crate) bus: PrivateBus,
    pub(crate) fs: ScratchFs,
}

impl Served {
    /// Starts `freezeframe-agent run` on a permissive private bus; `agent_config` goes into
    /// its `[agent]` section, `env` into its environment.
    pub(crate) fn start(agent_section: &str, env: &[(&str, &str)]) -> Served {
        Served::start_with(agent_section, env, "")
    }

    /// As [`Served::start`], with `drop_in` as a configuration drop-in (`config.d/`).
    pub(crate) fn start_with(agent_section: &str, env: &[(&str, &str)], drop_in: &str) -> Served {
        let fs = scratch_fs(Fs::Ext4);
        let bus = PrivateBus::start(&fs.dir.path().join("bus")).expect("start a private bus");
        let config = local_image_config(&fs, "");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("[agent]\n", &format!("[agent]\n{agent_section}"));
        std::fs::write(&config, text).unwrap();
        if !drop_in.is_empty() {
            let dir = config.with_file_name("config.d");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("50-test.toml"), drop_in).unwrap();
        }
        let notify = NotifySocket::bind(fs.dir.path());
        let agent = Command::new(agent_bin())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("NOTIFY_SOCKET", &notify.path)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .spawn()
            .expect("start the agent");
        let served = Served {
            agent: Some(agent),
            notify,
            bus,
            fs,
        };
        served.wait_until_serving();
        served
    }

    fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cli(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "the agent did not come up on its bus");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `freezeframe --bus-address BUS ARGS…`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        cli_on(&self.bus, args)
    }

    /// The agent's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.agent.as_ref().expect("the agent runs").id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(agent.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = agent.wait();
        }
    }
}

fn cli_on(bus: &PrivateBus, args: &[&str]) -> Output {
    cli_on_address(&bus.address, args)
}

pub(crate) fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_cli_snapshots_through_the_agent_and_reads_plan_status_list_and_prune() {
    let served = Served::start("", &[]);
    let writer = writer(&served.fs.path("records"));

    let out = served.cli(&["snapshot"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded (filesystem-consistent)"));
    // Not a terminal: one line per phase, in the order the agent ran them.
    let started: Vec<String> = stderr(&out)
        .lines()
        .filter_map(|l| l.strip_suffix(": started").map(String::from))
        .collect();
    assert_eq!(
        started,
        [
            "preflight",
            "quiesce",
            "sync",
            "freeze",
            "request",
            "thaw",
            "resume"
        ]
    );
    // The writer goes on after the thaw (its first write may have met the freeze, on a loaded
    // disk): a filesystem left frozen stalls it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.acked() == 0 {
        assert!(Instant::now() < deadline, "the writer never got a write through");
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.stop();

    // On a terminal (a pty from script(1)): the live spinner, and the frozen window as it ends.
    std::thread::sleep(Duration::from_millis(1100));
    let command = format!(
        "{} --bus-address {} snapshot",
        cli_bin().display(),
        served.bus.address
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("writes were blocked for") && shown.contains("succeeded"),
        "{shown}"
    );

    // Snapshot names carry the time to the second.
    std::thread::sleep(Duration::from_millis(1100));
    let report = json_of(&served.cli(&["snapshot", "--json", "--wait"]));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let newest = report["snapshot_name"].as_str().unwrap().to_string();

    let plan = json_of(&served.cli(&["plan", "--json"]));
    assert_eq!(
        plan["freeze_order"][0]["mountpoint"],
        served.fs.mountpoint.display().to_string()
    );
    let status = json_of(&served.cli(&["status", "--json"]));
    assert_eq!(status["frozen"], false);
    assert_eq!(status["last_result"]["snapshot_name"], newest.as_str());
    assert_eq!(status["snapshots"], 3, "{status:#}");
    assert_eq!(status["last_drill"], serde_json::Value::Null, "{status:#}");
    let text = String::from_utf8_lossy(&served.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("no restore drill of its 3 snapshots: `freezeframe verify SNAPSHOT`"),
        "{text}"
    );
    let list = json_of(&served.cli(&["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 3, "{list:#}");
    // As text: labelled columns, the name once (local-image ids are the names).
    let text = String::from_utf8_lossy(&served.cli(&["list"]).stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("CREATED") && lines[0].ends_with("NAME"),
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[3].matches(newest.as_str()).count(), 1, "{text}");
    // A scratch filesystem's image is some MB: said in MB, not as `0.0 GB`.
    let bytes = list[2]["size_bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000 && bytes < 1_000_000_000, "{list:#}");
    let size = lines[3].split("  ").map(str::trim).find(|c| c.ends_with("B"));
    assert_eq!(
        size,
        Some(format!("{:.0} MB", bytes as f64 / 1e6).as_str()),
        "{text}"
    );

    // Without --bus-address the CLI uses the system bus, wherever DBUS_SYSTEM_BUS_ADDRESS says.
    let out = Command::new(cli_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &served.bus.address)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["last_result"]["snapshot_name"], newest.as_str());

    let out = served.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for check in [
        "✓ bus",
        "✓ agent",
        "✓ filesystems: would freeze",
        "✓ provider local-image",
        "✓ metrics: off",
        "✓ freeze self-test",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
    assert!(!text.contains('✗'), "{text}");
    // Where the metrics go, said by doctor: a textfile folder (the agent reads its
    // configuration afresh for each call), or one that is not a folder, with the fix.
    let textfiles = served.fs.dir.path().join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let dropins = served.fs.dir.path().join("etc/config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let metrics = dropins.join("40-metrics.toml");
    let set_textfiles = |dir: &std::path::Path| {
        std::fs::write(
            &metrics,
            format!("[metrics]\ntextfile_dir = {:?}\n", dir.display().to_string()),
        )
        .unwrap()
    };
    set_textfiles(&textfiles);
    let text = String::from_utf8_lossy(&served.cli(&["doctor"]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "✓ metrics: written to {}",
            textfiles.join("freezeframe.prom").display()
        )),
        "{text}"
    );
    let not_a_folder = served.fs.dir.path().join("textfiles.file");
    std::fs::write(&not_a_folder, "").unwrap();
    set_textfiles(&not_a_folder);
    let out = served.cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("✗ metrics: metrics.textfile_dir") && text.contains("is not a folder"),
        "{text}"
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    std::fs::remove_file(&metrics).unwrap();

    // A dry run lists what the real run then deletes, exactly, and deletes nothing itself.
    let would = json_of(&served.cli(&["prune", "--keep", "2", "--dry-run", "--json"]));
    assert_eq!(
        json_of(&served.cli(&["list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let pruned = json_of(&served.cli(&["prune", "--keep", "2", "--json"]));
    assert_eq!(pruned.as_array().unwrap().len(), 1, "{pruned:#}");
    assert_eq!(would, pruned, "the dry run's selection is the real run's");
    let would =
        String::from_utf8_lossy(&served.cli(&["prune", "--keep", "1", "--dry-run"]).stdout).into_owned();
    assert!(
        would.starts_with("would delete 1 snapshot (--dry-run: nothing was deleted):\n  "),
        "{would}"
    );
    assert_eq!(
        json_of(&served.cli(&["list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let text = String::from_utf8_lossy(&served.cli(&["prune", "--keep", "1"]).stdout).into_owned();
    assert!(text.starts_with("deleted 1 snapshot:\n  "), "{text}");
    assert_eq!(
        would.lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>(),
        "the dry run named what was deleted"
    );
    let list = json_of(&served.cli(&["list", "--json"]));
    assert_eq!(list[0]["name"], newest.as_str(), "the newest is kept");
}

/// A raw call of Snapshot with `options`, for argument shapes the CLI never sends.
fn raw_snapshot(bus: &PrivateBus, options: Vec<(&str, zbus::Variant<'static>)>) -> Result<(), String> {
    raw_call(bus, "Snapshot", options)
}

/// Calls `method` (Snapshot, Prepare) with `options` as a plain D-Bus client.
fn raw_call(
    bus: &PrivateBus,
    method: &str,
    options: Vec<(&str, zbus::Variant<'static>)>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(bus.address.as_str())
            .build()
            .await
            .unwrap();
        let options: std::collections::HashMap<&str, zbus::Variant<'static>> = options.into_iter().collect();
        connection
            .call_method(
                Some("org.freezeframe.Agent1"),
                "/org/freezeframe/Agent1",
                Some("org.freezeframe.Agent1"),
                method,
                &(options,),
            )
            .await
            .map(drop)
            .map_err(|e| match e {
                zbus::Error::MethodError(name, message, _) => {
                    format!("{}: {}", name.as_str(), message.unwrap_or_default())
                }
                other => other.to_string(),
            })
    })
}

/// The shared exit-code table: a machine already snapshotting is 75 (EX_TEMPFAIL) whichever
/// program is told so, the CLI through the agent or the agent's own one-shot command.
#[test]
fn a_busy_agent_is_exit_75_for_the_cli_as_for_the_agent() {
    // The local-image copy sleeps inside the window, so the first snapshot is still running.
    let served = Served::start("", &[("FAILPOINTS", "local-image-copy=sleep(3000)")]);
    let first = Command::new(cli_bin())
        .args(["--bus-address", &served.bus.address, "snapshot", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    served
        .notify
        .wait_for_status("frozen", Duration::from_secs(30), || None);
    let cli = served.cli(&["snapshot"]);
    assert_eq!(cli.status.code(), Some(75), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("busy"), "{}", stderr(&cli));
    let config = served.fs.dir.path().join("etc/config.toml");
    let agent = Command::new(agent_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &served.bus.address)
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    assert_eq!(agent.status.code(), Some(75), "{}", stderr(&agent));
    let first = first.wait_with_output().unwrap();
    assert_eq!(json_of(&first)["status"], "succeeded", "{}", stderr(&first));
}

#[test]
fn busy_bad_arguments_and_other_users_get_typed_errors_and_nothing_is_touched() {
    // The local-image copy sleeps inside the window, so the first snapshot is still running
    // while the twenty below start, connect and call, seconds on a loaded machine (within
    // max_freeze, 20 s, with room for the copy itself).
    let served = Served::start("", &[("FAILPOINTS", "local-image-copy=sleep(8000)")]);
    let first = Command::new(cli_bin())
        .args(["--bus-address", &served.bus.address, "snapshot", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    served
        .notify
        .wait_for_status("frozen", Duration::from_secs(30), || None);
    // Twenty more at once: each is refused as Busy, none waits or freezes anything.
    let others: Vec<Child> = (0..20)
        .map(|_| {
            Command::new(cli_bin())
                .args(["--bus-address", &served.bus.address, "snapshot"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for other in others {
        let out = other.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        assert!(stderr(&out).contains("busy: snapshot job"), "{}", stderr(&out));
    }
    let first = first.wait_with_output().unwrap();
    assert_eq!(json_of(&first)["status"], "succeeded");

    for (options, expected) in [
        (vec![("wait", zbus::Variant::from("yes"))], "must be a boolean"),
        (vec![("name", zbus::Variant::from("x".repeat(100_000)))], "name"),
        (
            vec![("name", zbus::Variant::from("../etc"))],
            "option `name`: `../etc` is not a valid snapshot name",
        ),
        (
            vec![("colour", zbus::Variant::from(true))],
            "unknown option `colour`",
        ),
    ] {
        let err = raw_snapshot(&served.bus, options).unwrap_err();
        assert!(
            err.starts_with("org.freezeframe.Agent1.Error.InvalidArgs") && err.contains(expected),
            "{err}"
        );
    }
    for (options, expected) in [
        (vec![], "option `group` is required"),
        (
            vec![("group", zbus::Variant::from("nightly"))],
            "`nightly` is not a group id",
        ),
        (
            vec![
                ("group", zbus::Variant::from("g0123abcd")),
                ("name", zbus::Variant::from("x")),
            ],
            "unknown option `name`; the options are group (s), wait (b)",
        ),
        (
            vec![
                ("group", zbus::Variant::from("g0123abcd")),
                ("timeout-ms", zbus::Variant::from(0u64)),
            ],
            "must be above 0",
        ),
    ] {
        let err = raw_call(&served.bus, "Prepare", options).unwrap_err();
        assert!(
            err.starts_with("org.freezeframe.Agent1.Error.InvalidArgs") && err.contains(expected),
            "{err}"
        );
    }
    // busctl as a group's coordinator that leaves at once: the job aborts, freezing nothing.
    let busctl = |uid: u32, args: &[&str]| busctl_as(uid, &served.bus.address, args);
    let out = busctl(0, &["Prepare", "a{sv}", "1", "group", "s", "g0123abcd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("t ")
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = json_of(&served.cli(&["status", "--json"]));
        if status["running_job"] == 0 {
            let last = &status["last_result"];
            let error = last["error"].as_str().unwrap_or_default();
            assert!(error.contains("left the bus before it committed"), "{last:#}");
            assert_eq!(last["group"]["id"], "g0123abcd");
            assert!(
                last["filesystems"]["frozen"].as_array().unwrap().is_empty(),
                "{last:#}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "job {job} did not end: {status:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = busctl(0, &["Commit", "t", &job.to_string()]);
    assert!(
        stderr(&out).contains(&format!("no group job {job} is running here")),
        "{}",
        stderr(&out)
    );
    // Another user may not coordinate a group. (Freeze and Commit need no check of their own:
    // only the connection that called Prepare, admitted then, may call them.)
    for args in [
        &["Prepare", "a{sv}", "1", "group", "s", "g0123abcd"][..],
        &["Abort", "ts", "1", "because"],
    ] {
        let out = busctl(65534, args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("uid 65534"), "{args:?}: {}", stderr(&out));
    }
    let out = busctl(65534, &["Commit", "t", "1"]);
    assert!(!out.status.success(), "{}", stderr(&out));

    let out = served.cli(&["prune", "--keep", "0"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses it: {}", stderr(&out));
    let out = served.cli(&["snapshot", "--name", "no/slashes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Another user: this bus lets anyone through, so the refusal is the agent's own.
    for args in [["status"], ["snapshot"]] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cli_bin())
            .args(["--bus-address", &served.bus.address])
            .args(args)
            .output()
            .unwrap();
        // A user the agent refuses is the user's set-up to fix, as a refused token is: 2.
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("access denied") && stderr(&out).contains("uid 65534"),
            "{}",
            stderr(&out)
        );
    }
    let list = json_of(&served.cli(&["list", "--json"]));
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the first snapshot exists"
    );
}

#[test]
fn remote_hosts_are_reached_through_ssh_and_a_fleet_reports_each() {
    let alpha = Served::start("", &[]);
    let beta = Served::start("", &[]);
    let dir = alpha.fs.dir.path();
    let ssh = fake_ssh(
        dir,
        &[
            ("root@alpha", &alpha.bus),
            ("beta", &beta.bus),
            ("192.0.2.10", &alpha.bus),
            ("192.0.2.11", &beta.bus),
        ],
    );
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args(["--ssh-command", ssh.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };

    let out = cli(&["-H", "root@alpha", "snapshot", "--json"]);
    assert_eq!(json_of(&out)["status"], "succeeded", "{}", stderr(&out));
    let log = std::fs::read_to_string(dir.join("ssh.log")).unwrap();
    assert!(
        log.lines()
            .next()
            .unwrap()
            .ends_with("-x -T -o BatchMode=yes -- root@alpha systemd-stdio-bridge"),
        "{log}"
    );

    let out = cli(&[
        "-H",
        "root@alpha",
        "-H",
        "beta:2222",
        "-H",
        "gamma",
        "snapshot",
        "--name",
        "fleet-1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "one host unreachable: {text}{}",
        stderr(&out)
    );
    assert!(text.contains("root@alpha: snapshot fleet-1 succeeded"), "{text}");
    assert!(text.contains("beta:2222: snapshot fleet-1 succeeded"), "{text}");
    // The step that failed, ssh's own words, and the fix.
    assert!(
        text.contains(
            "gamma: FAILED: cannot reach gamma: ssh failed: ssh: Could not resolve hostname gamma; \
             check the host name `gamma`"
        ),
        "{text}"
    );
    assert!(text.contains("2 of 3 succeeded, 1 unreachable"), "{text}");
    assert!(std::fs::read_to_string(dir.join("ssh.log"))
        .unwrap()
        .contains("-p 2222 -- beta"));

    let out = cli(&["-H", "root@alpha", "-H", "beta", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l["exit"] == 0 && l["result"]["version"].is_string()));
    // One host, unreachable, with --json: one document that names the step.
    let out = cli(&["-H", "gamma", "status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let failure = json_of(&out);
    assert_eq!(failure["step"], "ssh", "{failure}");
    assert!(failure["error"]
        .as_str()
        .unwrap()
        .contains("Could not resolve hostname gamma"));
    // Several: one line each, the error without a FAILED prefix, the step named.
    let out = cli(&["-H", "root@alpha", "-H", "gamma", "status", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let gamma = lines.iter().find(|l| l["host"] == "gamma").unwrap();
    assert_eq!(gamma["step"], "ssh", "{gamma}");
    assert!(
        gamma["error"].as_str().unwrap().starts_with("cannot reach gamma"),
        "{gamma}"
    );

    let out = cli(&["-H", "-oProxyCommand=evil", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // --tag: the Droplets with the tag, from the API (the simulator), by public IPv4.
    let fleet = |id, name: &str, tags: &[&str], ip: &str| freezeframe_tests::sim::FleetDroplet {
        id,
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        public_ipv4: ip.into(),
    };
    let api = SimServer::start(freezeframe_tests::sim::SimConfig {
        token: "dop_v1_fleet".into(),
        droplet_id: 1,
        droplet_name: "laptop".into(),
        disk: None,
        image_dir: dir.join("sim-images"),
        action_delay: Duration::ZERO,
        capture: freezeframe_tests::sim::Capture::Registration,
        latency: Duration::ZERO,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: vec![
            fleet(11, "db-1", &["db"], "192.0.2.10"),
            fleet(12, "db-2", &["db", "web"], "192.0.2.11"),
            fleet(13, "web-1", &["web"], "192.0.2.12"),
        ],
        rate_limit: None,
    });
    let tagged_do = |tag: &str, token: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(cli_bin());
        cmd.args([
            "--ssh-command",
            ssh.to_str().unwrap(),
            "--api-url",
            &api.url,
            "--tag",
            tag,
        ])
        .args(args)
        .env_remove("DIGITALOCEAN_TOKEN");
        if let Some(token) = token {
            cmd.env("DIGITALOCEAN_TOKEN", token);
        }
        cmd.output().unwrap()
    };
    let tagged = |tag: &str, token: Option<&str>| tagged_do(tag, token, &["status", "--json"]);
    let out = tagged("db", Some("dop_v1_fleet"));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut hosts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["host"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["192.0.2.10", "192.0.2.11"]);
    let out = tagged("db", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set DIGITALOCEAN_TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = tagged("nobody-has-it", Some("dop_v1_fleet"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no Droplet has the tag"),
        "{}",
        stderr(&out)
    );
    let out = tagged("db", Some("dop_v1_wrong"));
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refused token is the configuration's: {}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("dop_v1_wrong"), "the token never shows");

    // The Droplets with the tag as one consistency group.
    let out = tagged_do("db", Some("dop_v1_fleet"), &["snapshot", "--group", "--json"]);
    let result = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{result:#}{}", stderr(&out));
    assert_eq!(result["consistent"], true, "{result:#}");
    let members = result["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let id = result["group"].as_str().unwrap();
    assert!(members
        .iter()
        .all(|m| m["report"]["snapshot_name"].as_str().unwrap().contains(id)));
}

#[test]
fn the_packaged_policy_limits_callers_and_the_agent_starts_on_demand_and_exits_when_idle() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\nidle_exit = \"1s\"\n");
    std::fs::write(&config, text).unwrap();
    let bus = activated_bus(fs.dir.path(), &config);
    assert!(agents_serving(&config).is_empty());

    // The first call starts it.
    let out = cli_on(&bus, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = agents_serving(&config);
    assert_eq!(first.len(), 1, "activated once");
    let report = json_of(&cli_on(&bus, &["snapshot", "--json"]));
    assert_eq!(report["status"], "succeeded", "{report:#}");

    // Idle for `idle_exit`, it goes; the next call starts it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agents_serving(&config).is_empty() {
        assert!(Instant::now() < deadline, "the agent did not exit when idle");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = json_of(&cli_on(&bus, &["status", "--json"]));
    assert_eq!(
        status["last_result"]["status"], "succeeded",
        "kept across restarts"
    );
    let second = agents_serving(&config);
    assert_eq!(second.len(), 1);
    assert_ne!(first, second, "a new process");

    // Another user: the bus policy lets Status through to the agent, which refuses it; the
    // bus itself refuses Snapshot.
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cli_bin())
            .args(["--bus-address", &bus.address])
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uid 65534 may not call this"),
        "{}",
        stderr(&out)
    );
    let out = as_nobody(&["snapshot"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("org.freedesktop.DBus.Error.AccessDenied"),
        "the bus policy refused it: {}",
        stderr(&out)
    );
    // With public_read, Status is open to everyone; Snapshot is not.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[agent]\n", "[agent]\npublic_read = true\n");
    std::fs::write(&config, text).unwrap();
    let out = as_nobody(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = json_of(&cli_on(&bus, &["list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "nobody took a snapshot");
    drop(bus);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agents_serving(&config).is_empty() {
        assert!(Instant::now() < deadline, "the agent outlived its bus");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_missing_agent_or_bus_is_exit_3_with_what_to_do() {
    let dir = scratch();
    let bus = PrivateBus::start(&dir.path().join("bus")).expect("start a private bus");
    let out = cli_on(&bus, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the agent is not on the bus: org.freedesktop.DBus.Error"),
        "{}",
        stderr(&out)
    );
    drop(bus);
    let out = cli_on_address(
        &format!("unix:path={}", dir.path().join("nothing").display()),
        &["snapshot"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    // With --json, the failure is the one JSON document on stdout.
    let out = cli_on_address(
        &format!("unix:path={}", dir.path().join("nothing").display()),
        &["status", "--json"],
    );
    assert_eq!(out.status.code(), Some(3));
    let failure = json_of(&out);
    assert_eq!(failure["exit"], 3);
    assert!(
        failure["error"].as_str().unwrap().contains("cannot reach"),
        "{failure}"
    );
    let out = cli_on_address("unix:path=/nonexistent", &["doctor"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✗ bus"), "{text}");
    assert!(
        text.contains("fix: nothing answers D-Bus at unix:path=/nonexistent"),
        "{text}"
    );
    assert!(!text.contains("ssh"), "no ssh advice for a local bus: {text}");
}

fn cli_on_address(address: &str, args: &[&str]) -> Output {
    Command::new(cli_bin())
        .args(["--bus-address", address])
        .args(args)
        .output()
        .unwrap()
}

/// `gdbus monitor` on `bus`, watching the agent's name, as `uid` (0: root), its output
/// collected as it comes.
struct Monitor {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Monitor {
    fn start(bus: &PrivateBus, uid: u32) -> Monitor {
        use std::io::Read;
        let id = uid.to_string();
        let mut child = Command::new("setpriv")
            .args([
                format!("--reuid={id}"),
                format!("--regid={id}"),
                "--clear-groups".into(),
            ])
            .args([
                "gdbus",
                "monitor",
                "--address",
                &bus.address,
                "--dest",
                "org.freezeframe.Agent1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut stdout, sink) = (child.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let monitor = Monitor { child, seen };
        // It says so once it watches the name's owner.
        monitor.wait_for("is owned by");
        monitor
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen().contains(text) {
            assert!(
                Instant::now() < deadline,
                "gdbus monitor never said {text:?}: {}",
                self.seen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn seen(&self) -> String {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn under_the_packaged_policy_only_root_and_the_group_receive_the_agents_signals() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "");
    let bus = activated_bus(fs.dir.path(), &config);
    // The agent must be on the bus for gdbus to watch its name.
    assert!(cli_on(&bus, &["status"]).status.success());
    let as_root = Monitor::start(&bus, 0);
    let as_nobody = Monitor::start(&bus, 65534);
    let report = json_of(&cli_on(&bus, &["snapshot", "--json"]));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    // The monitor works: root, allowed by the policy, saw the job's phases and its report.
    let name = report["snapshot_name"].as_str().unwrap();
    as_root.wait_for(name);
    let seen_by_root = as_root.seen();
    assert!(seen_by_root.contains("PhaseChanged"), "{seen_by_root}");
    // The properties' changes came too: frozen, then thawed.
    for change in ["'Frozen': <true>", "'Frozen': <false>", "'RunningJob': <uint64 "] {
        assert!(seen_by_root.contains(change), "{change}: {seen_by_root}");
    }
    // The same signal was offered to both; one more round trip lets a slower monitor catch up.
    assert!(cli_on(&bus, &["status"]).status.success());
    let seen_by_nobody = as_nobody.seen();
    for secret in ["PhaseChanged", "JobFinished", "PropertiesChanged", name] {
        assert!(
            !seen_by_nobody.contains(secret),
            "another user saw {secret}: {seen_by_nobody}"
        );
    }
}

#[test]
fn busctl_reads_the_typed_answers_without_parsing_json() {
    let served = Served::start("", &[]);
    let busctl = |args: &[&str]| {
        let out = Command::new("busctl")
            .args(["--address", &served.bus.address])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "busctl {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let agent = [
        "org.freezeframe.Agent1",
        "/org/freezeframe/Agent1",
        "org.freezeframe.Agent1",
    ];
    // A job is named by its id; nothing was left to thaw, typed as two empty struct arrays.
    let job = busctl(
        &[
            &["call"][..],
            &agent,
            &["Snapshot", "a{sv}", "1", "dry-run", "b", "true"],
        ]
        .concat(),
    );
    assert!(job.starts_with("t "), "{job}");
    assert!(job[2..].parse::<u64>().is_ok_and(|id| id > 0), "{job}");
    let thawed = busctl(&[&["call"][..], &agent, &["Thaw"]].concat());
    assert_eq!(thawed, "a(sss)a(sbs) 0 0");
    // Results are D-Bus types, not JSON text: the plan's and the status's fields are read
    // straight from busctl's JSON output.
    let busctl_json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&busctl(&[&["--json=short", "call"][..], &agent, args].concat())).unwrap()
    };
    let plan = busctl_json(&["Plan"]);
    assert_eq!(plan["type"], "a{sv}", "{plan}");
    let order = &plan["data"][0]["freeze_order"];
    assert_eq!(order["type"], "av", "{plan}");
    // An array element is a variant holding the entry's a{sv}.
    let first = &order["data"][0]["data"]["data"];
    assert_eq!(first["mountpoint"]["type"], "s", "{plan}");
    assert_eq!(
        first["mountpoint"]["data"],
        served.fs.mountpoint.display().to_string()
    );
    let report = json_of(&served.cli(&["snapshot", "--json"]));
    assert_eq!(report["status"], "succeeded");
    let status = busctl_json(&["Status"]);
    let last = &status["data"][0]["last_result"];
    assert_eq!(last["type"], "a{sv}", "{status}");
    assert_eq!(
        last["data"]["snapshot_name"]["data"], report["snapshot_name"],
        "{status}"
    );
    assert_eq!(last["data"]["frozen_ms"]["type"], "d", "{status}");
    // The status's fields as properties, for `busctl get-property`.
    let property = |name: &str| busctl(&["get-property", agent[0], agent[1], agent[2], name]);
    assert_eq!(property("Frozen"), "b false");
    assert_eq!(property("RunningJob"), "t 0");
    assert_eq!(
        property("Version"),
        format!("s \"{}\"", env!("CARGO_PKG_VERSION"))
    );
    let last = property("LastResult");
    assert!(
        last.starts_with("a{sv} ") && last.contains(report["snapshot_name"].as_str().unwrap()),
        "{last}"
    );
    let introspection = busctl(&["introspect", "--xml-interface", agent[0], agent[1]]);
    assert!(
        introspection.contains(r#"<arg name="filesystems" type="a(sss)" direction="out"/>"#)
            && introspection.contains(r#"<arg name="job" type="t" direction="out"/>"#),
        "{introspection}"
    );
}

#[test]
fn status_shows_the_last_run_also_when_it_was_a_one_shot_snapshot() {
    let served = Served::start("", &[]);
    let first = json_of(&served.cli(&["snapshot", "--json", "--name", "through-the-agent"]));
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(served.fs.dir.path().join("etc/config.toml"))
        .args(["snapshot", "--json", "--name", "one-shot"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status = json_of(&served.cli(&["status", "--json"]));
    assert_eq!(status["last_result"]["snapshot_name"], "one-shot", "{status:#}");
}

#[test]
fn doctor_says_what_failed_and_the_fix_that_matches_it() {
    use std::os::unix::fs::PermissionsExt;
    let served = Served::start("", &[]);
    let etc = served.fs.dir.path().join("etc");
    let token = etc.join("do-token");
    std::fs::create_dir_all(etc.join("config.d")).unwrap();
    // A machine that is not a Droplet: nothing answers where the metadata service would be.
    std::fs::write(
        etc.join("config.d/50-do.toml"),
        format!(
            "[snapshot]\nprovider = \"digitalocean\"\n[digitalocean]\ntoken_file = {:?}\n\
             metadata_url = \"http://127.0.0.1:1\"\napi_url = \"http://127.0.0.1:1\"\napi_timeout = \"2s\"\n",
            token.display().to_string()
        ),
    )
    .unwrap();
    let doctor = || String::from_utf8_lossy(&served.cli(&["doctor"]).stdout).into_owned();
    // No token yet: the fix names the configured file, not the default one.
    let text = doctor();
    assert!(text.contains("✓ bus: connected to the bus at"), "{text}");
    assert!(
        text.contains(&format!(
            "fix: store the token with `freezeframe-agent setup-token` (it writes {}",
            token.display()
        )),
        "{text}"
    );
    assert!(!text.contains("/etc/freezeframe/token"), "{text}");
    // Readable by others: chmod, on that file.
    std::fs::write(&token, "dop_v1_x\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = doctor();
    assert!(
        text.contains(&format!("fix: chmod 600 {}", token.display())),
        "{text}"
    );
    // With a private token, the metadata service's silence says this is not a Droplet.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = doctor();
    assert!(text.contains("does not look like a Droplet"), "{text}");
    assert!(text.contains("fix: on a Droplet, check its network"), "{text}");
    assert!(text.contains("`digitalocean.droplet_id`"), "{text}");
    assert!(text.contains("snapshot strategy: live"), "{text}");
    // A Droplet snapshotted offline: doctor says who takes its snapshots.
    std::fs::write(
        etc.join("config.d/60-offline.toml"),
        "[snapshot]\nstrategy = \"offline\"\n",
    )
    .unwrap();
    let text = doctor();
    assert!(
        text.contains("snapshot strategy: offline: `freezeframe snapshot --offline` from another machine"),
        "{text}"
    );
}

/// `busctl call` of org.freezeframe.Agent1's `args` on `address`, as `uid`, no groups.
fn busctl_as(uid: u32, address: &str, args: &[&str]) -> Output {
    let (uid, gid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
    busctl_with_ids(&[&uid, &gid, "--clear-groups"], address, args)
}

/// `busctl call` of org.freezeframe.Agent1's `args` on `address`, as `setpriv`'s `ids` say.
pub(crate) fn busctl_with_ids(ids: &[&str], address: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(ids)
        .arg("busctl")
        .arg(format!("--address={address}"))
        .args([
            "call",
            "org.freezeframe.Agent1",
            "/org/freezeframe/Agent1",
            "org.freezeframe.Agent1",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// A caller the agent refuses is no activity: however often it calls, the agent leaves when
/// idle, as if nobody had called.
#[test]
fn a_refused_caller_does_not_keep_the_agent_from_its_idle_exit() {
    let mut served = Served::start("idle_exit = \"2s\"\n", &[]);
    let address = served.bus.address.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calls = 0;
    loop {
        if let Some(exit) = served.agent.as_mut().unwrap().try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent stayed up for a caller it refused {calls} times"
        );
        // Read (refused: no public_read), and a coordinator's word for a job it does not own.
        let args: &[&str] = if calls % 2 == 0 {
            &["Status"]
        } else {
            &["Commit", "t", "1"]
        };
        let out = busctl_as(65534, &address, args);
        calls += 1;
        if served.agent.as_mut().unwrap().try_wait().unwrap().is_none() {
            assert!(!out.status.success(), "{args:?} was allowed");
        }
    }
    assert!(calls > 2, "called while it ran");
}

/// The agent on `bus` with `config`, stopped when dropped.
struct AgentOn(Child);

impl AgentOn {
    fn start(bus: &PrivateBus, config: &std::path::Path) -> AgentOn {
        let agent = AgentOn(
            Command::new(agent_bin())
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .env_remove("DIGITALOCEAN_TOKEN")
                .arg("--config")
                .arg(config)
                .arg("run")
                .spawn()
                .expect("start the agent"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !busctl_as(0, &bus.address, &["Status"]).status.success() {
            assert!(Instant::now() < deadline, "the agent did not come up on its bus");
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }
}

impl Drop for AgentOn {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// With `public_read`, any local user may list the snapshots, and each list costs API calls
/// from the token's budget: another uid's lists, however many, cost one list within its
/// lifetime. Root's are fresh; a snapshot this agent takes makes the next one fresh too.
#[test]
fn every_users_lists_cost_the_api_one_list_within_its_lifetime() {
    let droplet = crate::droplet::Droplet::new(Duration::from_millis(100), "");
    let text = std::fs::read_to_string(&droplet.config)
        .unwrap()
        .replace("[agent]\n", "[agent]\npublic_read = true\n");
    std::fs::write(&droplet.config, text).unwrap();
    let bus = PrivateBus::start(&droplet.dir.path().join("bus")).expect("start a private bus");
    let _agent = AgentOn::start(&bus, &droplet.config);
    let calls = || droplet.server.sim.counters().calls.len();
    let list_as_nobody = || {
        let out = busctl_as(65534, &bus.address, &["ListSnapshots"]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // At most one list per 30 s (the kept answer's lifetime) begun since `since`: one, unless
    // this machine is so loaded that the calls below took longer.
    let allowed = |since: Instant| 1 + since.elapsed().as_secs() as usize / 30;

    let (before, first) = (calls(), Instant::now());
    assert_eq!(list_as_nobody().trim(), "aa{sv} 0");
    let one_list = calls() - before;
    assert!(one_list > 0, "a list asks the API");
    // Fifty more, ten at a time: none reaches the API.
    for _ in 0..5 {
        std::thread::scope(|s| {
            for _ in 0..10 {
                s.spawn(list_as_nobody);
            }
        });
    }
    let spent = calls() - before;
    assert!(
        spent <= allowed(first) * one_list,
        "{spent} calls for 51 lists: {:#?}",
        droplet.server.sim.counters().calls
    );

    // Root's list is fresh.
    let before_root = calls();
    let out = busctl_as(0, &bus.address, &["ListSnapshots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(calls() - before_root, one_list);

    // A snapshot by this agent: the next list, anyone's, sees it.
    let report = json_of(&cli_on(&bus, &["snapshot", "--json", "--wait"]));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let (after_snapshot, first) = (calls(), Instant::now());
    let listed = list_as_nobody();
    assert!(listed.starts_with("aa{sv} 1 "), "{listed}");
    assert!(calls() > after_snapshot, "asked the API again");
    for _ in 0..10 {
        list_as_nobody();
    }
    assert!(calls() - after_snapshot <= allowed(first) * one_list);
}
