//! The agent against the real systemd and logind, in a Debian container booted with
//! systemd-nspawn: FreezeUnit/ThawUnit and StopUnit/StartUnit on real units, discovery with
//! ListUnitsByPatterns, the shutdown inhibitor, and preflight refusals. The agent runs inside
//! the container (as it would on a Droplet), against the API simulator on the shared loopback.

use freezeframe_tests::container::{self, Bind, Container};
use freezeframe_tests::sim::{Capture, SimConfig};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "dop_v1_simulated_secret_token";

const UNITS: &[(&str, &str)] = &[
    // Appends a counter to the frozen volume, to see it stop and go on.
    (
        "writer.service",
        "[Service]\nExecStart=/bin/sh -c 'i=0; while :; do i=$((i+1)); echo $i >> /vol/writer.log; sleep 0.02; done'\n",
    ),
    ("worker.service", "[Service]\nExecStart=/bin/sleep infinity\n"),
    // systemd refuses to stop it on request: a prepare that fails after another one succeeded.
    (
        "pinned.service",
        "[Unit]\nRefuseManualStop=yes\n[Service]\nExecStart=/bin/sleep infinity\n",
    ),
    // Named like Debian's Redis unit but serving nothing: detection finds it, and says why it
    // cannot be quiesced natively.
    ("redis-server.service", "[Service]\nExecStart=/bin/sleep infinity\n"),
];

/// Writes the agent's configuration (as seen inside the container) into `etc`.
fn write_config(etc: &Path, api_url: &str, quiescers: &str) {
    std::fs::create_dir_all(etc).unwrap();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "[freeze]\nmountpoints = [\"/vol\"]\nmax_freeze = \"10s\"\n\
             [digitalocean]\napi_url = {api_url:?}\nmetadata_url = {api_url:?}\n\
             token_file = \"/etc/freezeframe/token\"\n{quiescers}"
        ),
    )
    .unwrap();
}

fn systemd_quiescer(unit: &str, mode: &str) -> String {
    format!("[[quiescer]]\nkind = \"systemd\"\nunit = \"{unit}\"\nmode = \"{mode}\"\n")
}

fn report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn units_are_frozen_stopped_detected_and_checked_by_the_real_systemd() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED units_are_frozen_stopped_detected_and_checked_by_the_real_systemd: {why}");
        return;
    }
    // A frozen window long enough to look at the units while it lasts.
    let rig = booted_machine(
        &(systemd_quiescer("writer", "freeze") + &systemd_quiescer("worker", "stop")),
        Duration::from_secs(1),
        &[],
    );
    let (machine, sim, notify) = (&rig.machine, &rig.sim, &rig.notify);
    let etc = rig.fs.dir.path().join("etc");
    for (name, text) in UNITS {
        std::fs::write(notify.join(name), text).unwrap();
        machine.sh(&format!("cp {}/{name} /etc/systemd/system/", notify.display()));
    }
    machine.sh("systemctl daemon-reload && systemctl start writer worker pinned redis-server");
    machine.sh("until [ -s /vol/writer.log ]; do sleep 0.05; done");

    // Discovery through the real ListUnitsByPatterns and MainPID.
    let plan = machine.exec(&["freezeframe-agent", "plan", "--json"]);
    let plan = report(&plan);
    let unit = &plan["databases"]["units"][0];
    assert_eq!(unit["unit"], "redis-server.service", "{plan:#}");
    assert!(
        unit["note"].as_str().unwrap().contains("listens on no socket"),
        "{plan:#}"
    );

    let snapshot = machine.command(&["freezeframe-agent", "snapshot", "--json"]);
    let (child, _) = spawn_until_frozen(snapshot, notify);
    assert_eq!(machine.unit_property("writer", "FreezerState"), "frozen");
    assert_eq!(machine.unit_property("worker", "ActiveState"), "inactive");
    let inhibitors = machine.sh("systemd-inhibit --list --no-pager");
    assert!(
        inhibitors.contains("freezeframe") && inhibitors.contains("delay"),
        "{inhibitors}"
    );
    let out = child.wait_with_output().unwrap();
    let result = report(&out);
    assert_eq!(result["status"], "succeeded", "{result:#}");
    assert!(result["action_id"].is_string());
    for q in result["quiescers"].as_array().unwrap() {
        assert_eq!(q["resumed"], true, "{q}");
    }
    // The fake Redis unit was found but not quiesced: no claim of application consistency.
    assert_eq!(result["consistency"], "filesystem", "{result:#}");
    assert!(result["warnings"][0]
        .as_str()
        .unwrap()
        .contains("redis-server.service"));
    assert_eq!(machine.unit_property("writer", "FreezerState"), "running");
    assert_eq!(machine.unit_property("worker", "ActiveState"), "active");
    assert!(!machine
        .sh("systemd-inhibit --list --no-pager")
        .contains("freezeframe"));
    let lines = machine.sh("wc -l < /vol/writer.log");
    machine.sh(&format!(
        "until [ $(wc -l < /vol/writer.log) -gt {lines} ]; do sleep 0.05; done"
    ));

    // A prepare that fails aborts the run, and what was prepared before it is resumed.
    write_config(
        &etc,
        &sim.url,
        &(systemd_quiescer("writer", "freeze") + &systemd_quiescer("pinned", "stop")),
    );
    let result = report(&machine.exec(&["freezeframe-agent", "snapshot", "--json"]));
    assert_eq!(result["failed_phase"], "quiesce", "{result:#}");
    assert!(
        result["error"].as_str().unwrap().contains("pinned.service"),
        "{result:#}"
    );
    assert_eq!(result["quiescers"][0]["resumed"], true, "{result:#}");
    assert!(result["filesystems"]["frozen"].as_array().unwrap().is_empty());
    assert_eq!(machine.unit_property("writer", "FreezerState"), "running");
    assert_eq!(machine.unit_property("pinned", "ActiveState"), "active");

    // An agent SIGKILLed while a unit is frozen and another stopped: its guard thaws the
    // filesystem, and the units, which no kernel guard resumes, are listed for
    // `freezeframe-agent thaw` (ExecStopPost), which resumes them in reverse order.
    write_config(
        &etc,
        &sim.url,
        &(systemd_quiescer("writer", "freeze") + &systemd_quiescer("worker", "stop")),
    );
    sim.sim
        .set_faults(vec!["POST /v2/droplets/=latency:30000".parse().unwrap()]);
    let snapshot = machine.command(&["freezeframe-agent", "snapshot", "--json"]);
    let (child, _) = spawn_until_frozen(snapshot, notify);
    assert_eq!(machine.unit_property("writer", "FreezerState"), "frozen");
    // The agent, not its guard (a child of the agent's, with the same command line). Every
    // process is judged before any is killed: a guard whose agent died first is reparented and
    // would pass for an agent.
    machine.sh(
        "agents=; for p in /proc/[0-9]*; do grep -qa '[f]reezeframe-agent.snapshot' $p/cmdline 2>/dev/null || continue; \
         ppid=$(awk '/^PPid/ {print $2}' $p/status); \
         grep -qa '[f]reezeframe-agent' /proc/$ppid/cmdline 2>/dev/null || agents=\"$agents ${p#/proc/}\"; done; \
         test -n \"$agents\" && kill -KILL $agents",
    );
    let _ = child.wait_with_output();
    sim.sim.set_faults(Vec::new());
    // The guard thaws at the dead agent's end. Looked at from outside: a write to a filesystem
    // left frozen would wait in the kernel beyond any timeout's reach.
    let killed = std::time::Instant::now();
    while freezeframe_tests::is_frozen(&rig.fs.mountpoint) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the guard did not thaw /vol after its agent was SIGKILLed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    machine.sh("echo after-kill >> /vol/probe");
    assert_eq!(
        machine.unit_property("writer", "FreezerState"),
        "frozen",
        "left frozen by the dead agent"
    );
    assert_eq!(machine.unit_property("worker", "ActiveState"), "inactive");
    assert_eq!(
        machine.sh("cat /run/freezeframe/pending-resumes"),
        "thaw-unit writer.service\nstart-unit worker.service"
    );
    let thawed = machine.sh("freezeframe-agent thaw");
    let started = thawed.find("worker.service (stopped): start: done");
    let unfrozen = thawed.find("writer.service (frozen): thaw: done");
    assert!(
        started.is_some() && unfrozen.is_some() && started < unfrozen,
        "{thawed}"
    );
    assert_eq!(machine.unit_property("writer", "FreezerState"), "running");
    assert_eq!(machine.unit_property("worker", "ActiveState"), "active");
    machine.sh("test ! -e /run/freezeframe/pending-resumes");

    // Preflight refuses what cannot be quiesced, before anything is touched.
    machine.sh("systemctl stop worker");
    for (quiescer, expected) in [
        (
            systemd_quiescer("ghost", "stop"),
            "ghost.service: the unit is not-found",
        ),
        (
            systemd_quiescer("worker", "freeze"),
            "worker.service: the unit is inactive, not active",
        ),
    ] {
        write_config(&etc, &sim.url, &quiescer);
        let out = machine.exec(&["freezeframe-agent", "snapshot", "--json"]);
        let result = report(&out);
        assert_eq!(result["failed_phase"], "preflight", "{result:#}");
        assert!(result["error"].as_str().unwrap().contains(expected), "{result:#}");
        assert!(result["filesystems"]["frozen"].as_array().unwrap().is_empty());
    }
    assert_eq!(
        machine.unit_property("worker", "ActiveState"),
        "inactive",
        "left as it was"
    );
}

/// Where the test's notify folder is seen inside the container, outside any private /tmp.
const NOTIFY_INSIDE: &str = "/run/freezeframe-test-notify";

/// A booted container whose agent freezes /vol with `quiescers` (TOML) and has `hooks` (name,
/// script body) in /etc/freezeframe/hooks.d, against the simulator answering after `latency`;
/// `notify` is a host folder seen at the same path inside, for sd_notify sockets and files to
/// copy in. Fields drop in order: the container stops before the simulator and the filesystem go.
struct Rig {
    machine: Container,
    sim: SimServer,
    notify: std::path::PathBuf,
    fs: ScratchFs,
}

fn booted_machine(quiescers: &str, latency: Duration, hooks: &[(&str, &str)]) -> Rig {
    booted_machine_with(&[], quiescers, latency, hooks)
}

/// [`booted_machine`] on a root with these Debian `packages` besides. The `notify` folder is
/// also at [`NOTIFY_INSIDE`], which a sandbox's private /tmp does not hide.
fn booted_machine_with(packages: &[&str], quiescers: &str, latency: Duration, hooks: &[(&str, &str)]) -> Rig {
    let fs = scratch_fs(Fs::Ext4);
    let images = fs.dir.path().join("sim-images");
    std::fs::create_dir_all(&images).unwrap();
    let sim = SimServer::start(SimConfig {
        token: TOKEN.into(),
        droplet_id: 3164444,
        droplet_name: "web-1".into(),
        disk: None,
        image_dir: images,
        action_delay: Duration::ZERO,
        capture: Capture::Registration,
        latency,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    });
    let etc = fs.dir.path().join("etc");
    write_config(&etc, &sim.url, quiescers);
    let token = etc.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = etc.join("hooks.d");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in hooks {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let notify = fs.dir.path().join("notify");
    std::fs::create_dir_all(&notify).unwrap();
    let root = container::debian_root(packages);
    let agent = agent_bin();
    let machine = Container::boot(
        &root,
        &[
            Bind {
                host: &fs.mountpoint,
                inside: "/vol",
                read_only: false,
            },
            Bind {
                host: &etc,
                inside: "/etc/freezeframe",
                read_only: true,
            },
            Bind {
                host: &agent,
                inside: "/usr/local/bin/freezeframe-agent",
                read_only: true,
            },
            Bind {
                host: &notify,
                inside: notify.to_str().unwrap(),
                read_only: false,
            },
            Bind {
                host: &notify,
                inside: NOTIFY_INSIDE,
                read_only: false,
            },
        ],
    );
    Rig {
        machine,
        sim,
        notify,
        fs,
    }
}

#[test]
fn hooks_run_as_transient_units_outside_the_agents_sandbox() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED hooks_run_as_transient_units_outside_the_agents_sandbox: {why}");
        return;
    }
    // Two hooks the agent's sandbox would break: one reads the host's /tmp (hidden from the
    // agent by PrivateTmp) and leaves a process holding its output open until its unit is
    // stopped; one maps memory writable and executable (as node or java do; refused by
    // MemoryDenyWriteExecute). mmap(0, 4096, RWX, PRIVATE|ANONYMOUS) is syscall 9.
    let rig = booted_machine(
        "",
        Duration::from_millis(100),
        &[
        (
            "10-reads-tmp",
            "[ \"$1\" = freeze ] || exit 0\ntest -e /tmp/host-marker || { echo 'no /tmp/host-marker'; exit 1; }\n\
             sleep 300 &\necho 'host /tmp seen'",
        ),
        (
            "20-needs-wx",
            "[ \"$1\" = freeze ] || exit 0\nperl -e 'exit(syscall(9, 0, 4096, 7, 34, -1, 0) == -1 ? 1 : 0)' || { echo 'no W+X memory'; exit 1; }",
        ),
    ]);
    let machine = &rig.machine;
    machine.sh("touch /tmp/host-marker");
    // The agent sandboxed as the packaged unit sandboxes it (the two settings that matter here).
    let sandboxed = |command: &str| {
        machine.exec(&[
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "-p",
            "MemoryDenyWriteExecute=yes",
            "-p",
            "PrivateTmp=yes",
            "sh",
            "-c",
            command,
        ])
    };
    // The control: run inside that sandbox, each hook fails.
    for hook in ["10-reads-tmp", "20-needs-wx"] {
        let out = sandboxed(&format!("/etc/freezeframe/hooks.d/{hook} freeze"));
        assert!(!out.status.success(), "{hook} ran in the sandbox");
    }
    // Through the agent in the same sandbox, they run as units of their own, and succeed.
    let out = sandboxed("freezeframe-agent snapshot --json");
    let result = report(&out);
    assert_eq!(result["status"], "succeeded", "{result:#}");
    assert_eq!(result["consistency"], "application", "{result:#}");
    assert_eq!(result["quiescers"][0]["name"], "hooks");
    assert_eq!(result["quiescers"][0]["resumed"], true);
    // Its output reached the agent's log through the unit.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host /tmp seen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every hook unit is gone once the thaws ran, and what a hook left running with it.
    let left = machine.sh("systemctl list-units --all --no-legend 'freezeframe-hook-*' | wc -l");
    assert_eq!(left.trim(), "0", "hook units left behind");
    machine.sh("! grep -qa '^sleep.300' /proc/[0-9]*/cmdline");
}

#[test]
fn a_hook_unit_cut_short_by_a_dead_agent_is_stopped_before_its_thaw() {
    if let Some(why) = container::unavailable() {
        eprintln!("SKIPPED a_hook_unit_cut_short_by_a_dead_agent_is_stopped_before_its_thaw: {why}");
        return;
    }
    // Its `freeze` hangs with a child; its `thaw` notes whether that child was still there (it
    // must have been ended first).
    let rig = booted_machine(
        "",
        Duration::from_millis(100),
        &[(
        "10-slow",
        "if [ \"$1\" = freeze ]; then echo started > /tmp/hook-freeze; sleep 600 & wait; fi\n\
         if [ \"$1\" = thaw ]; then if grep -qa '^sleep.600' /proc/[0-9]*/cmdline; then echo raced; else echo clean; fi > /tmp/hook-thaw; fi",
    )]);
    let machine = &rig.machine;
    let mut snapshot = machine
        .command(&["freezeframe-agent", "snapshot", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while machine.exec(&["test", "-e", "/tmp/hook-freeze"]).status.code() != Some(0) {
        if let Some(status) = snapshot.try_wait().unwrap() {
            let out = snapshot.wait_with_output().unwrap();
            panic!(
                "the snapshot ended ({status}) before its hook ran: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(std::time::Instant::now() < deadline, "the hook never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        machine
            .sh("systemctl list-units --no-legend 'freezeframe-hook-*' | wc -l")
            .trim(),
        "1",
        "the hook runs in a unit of its own"
    );
    machine.sh(
        "for p in /proc/[0-9]*; do grep -qa '^freezeframe-agent' $p/cmdline 2>/dev/null && kill -KILL ${p#/proc/}; done; true",
    );
    let _ = snapshot.wait();
    // The unit outlives the agent (it is systemd's); the resume for the dead agent ends it,
    // then runs the hook's thaw.
    assert!(
        machine
            .sh("grep -c 'hook-unit' /run/freezeframe/pending-resumes")
            .trim()
            == "1"
    );
    let out = machine.exec(&["freezeframe-agent", "thaw", "--json"]);
    let recovered = report(&out);
    assert_eq!(recovered["resumes"][0]["ok"], true, "{recovered:#}");
    assert_eq!(
        machine.sh("cat /tmp/hook-thaw"),
        "clean",
        "the freeze was ended before the thaw"
    );
    assert_eq!(
        machine
            .sh("systemctl list-units --all --no-legend 'freezeframe-hook-*' | wc -l")
            .trim(),
        "0",
        "no hook unit is left"
    );
}

/// `systemd-run` arguments that sandbox a command as the packaged agent unit sandboxes the
/// agent: every setting of its [Service] section but those that say how it starts and stops.
fn agent_unit_sandbox() -> Vec<String> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/freezeframe-agent.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let service = text.split("[Service]").nth(1).unwrap();
    const HOW_IT_RUNS: [&str; 10] = [
        "Type",
        "BusName",
        "ExecStart",
        "ExecStartPre",
        "ExecStopPost",
        "Restart",
        "RestartSec",
        "TimeoutStopSec",
        "WatchdogSec",
        "NotifyAccess",
    ];
    let settings: Vec<String> = service
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !HOW_IT_RUNS.contains(&l.split('=').next().unwrap()))
        .flat_map(|l| ["-p".to_string(), l.to_string()])
        .collect();
    assert!(settings.iter().any(|s| s == "PrivateTmp=yes"), "{settings:?}");
    settings
}

#[test]
fn a_mariadb_whose_socket_is_in_tmp_is_locked_across_the_freeze_by_the_sandboxed_agent() {
    if let Some(why) = container::unavailable() {
        eprintln!(
            "SKIPPED a_mariadb_whose_socket_is_in_tmp_is_locked_across_the_freeze_by_the_sandboxed_agent: {why}"
        );
        return;
    }
    let rig = booted_machine_with(
        // The root other database tests in containers use: one cached root for them all.
        &["mariadb-server", "postgresql", "redis-server"],
        "[[quiescer]]\nkind = \"mariadb\"\nsocket = \"/tmp/mysql.sock\"\n",
        Duration::from_millis(100),
        &[],
    );
    let (machine, sim, notify) = (&rig.machine, &rig.sim, &rig.notify);
    // MariaDB with its data on the frozen volume and its socket in /tmp, as outside Debian;
    // the other databases of the root stop (their data is not on the volume). Its sockets
    // for activation stop too: the server would listen on theirs, not on /tmp/mysql.sock.
    // Its redo log is kept small (as on the host servers): the default 96 MiB does not fit
    // the volume.
    machine.sh(
        "systemctl stop 'mariadb*.socket' mariadb postgresql redis-server && \
         printf '[mysqld]\\ndatadir = /vol/mysql\\ninnodb_log_file_size = 8M\\nsocket = /tmp/mysql.sock\\n[client]\\nsocket = /tmp/mysql.sock\\n' \
           > /etc/mysql/mariadb.conf.d/99-tmp-socket.cnf && \
         mariadb-install-db --user=mysql --datadir=/vol/mysql >/dev/null && \
         systemctl start mariadb && \
         mariadb -e 'CREATE DATABASE app; CREATE TABLE app.rows (n INT) ENGINE=MEMORY'",
    );
    // The snapshot request is held a while, so the window can be looked into.
    sim.sim
        .set_faults(vec!["POST /v2/droplets/=latency:3000".parse().unwrap()]);
    let socket = NotifySocket::bind(notify);
    let inside = Path::new(NOTIFY_INSIDE).join(socket.path.file_name().unwrap());
    let mut run = vec![
        "systemd-run".to_string(),
        "--wait".into(),
        "--pipe".into(),
        "--quiet".into(),
        format!("--setenv=NOTIFY_SOCKET={}", inside.display()),
    ];
    run.extend(agent_unit_sandbox());
    run.extend(["freezeframe-agent".into(), "snapshot".into(), "--json".into()]);
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let mut agent = machine
        .command(&run)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    socket.wait_for_status("frozen", Duration::from_secs(120), || {
        agent.try_wait().unwrap().map(|status| {
            let out = agent.wait_with_output_ref();
            format!("the agent exited ({status}) before freezing: {out}")
        })
    });
    // Frozen, and the lock is held: a write (to a table in memory, which the frozen disk
    // would not stop) waits for it, and gives up.
    let write = machine.exec(&[
        "mariadb",
        "-e",
        "SET SESSION lock_wait_timeout = 1; INSERT INTO app.rows VALUES (1)",
    ]);
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Lock wait timeout exceeded"),
        "a write went through during the freeze: {write:?}"
    );
    let out = agent.wait_with_output().unwrap();
    let result = report(&out);
    assert_eq!(result["status"], "succeeded", "{result:#}");
    assert_eq!(result["consistency"], "application", "{result:#}");
    assert_eq!(result["quiescers"][0]["resumed"], true, "{result:#}");
    // Released after the thaw, and the clients' units are gone.
    machine.sh("mariadb -e 'SET SESSION lock_wait_timeout = 30; INSERT INTO app.rows VALUES (2)'");
    let left = machine.sh("systemctl list-units --all --no-legend 'freezeframe-client-*' | wc -l");
    assert_eq!(left.trim(), "0", "client units left behind");
}
