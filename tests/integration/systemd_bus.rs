//! The agent and systemd over D-Bus, on a private bus: a stand-in systemd whose units point at
//! real database servers started by the test, and a stand-in logind. With no configuration
//! beyond the filesystems to freeze, the agent detects PostgreSQL, MariaDB and Redis, quiesces
//! each natively under write load, holds a shutdown inhibitor, and the image restores all three.

use crate::servers::*;
use freezeframe_tests::bus::{FakeSystemd, FakeUnit, PrivateBus};
use freezeframe_tests::*;
use std::path::Path;
use std::process::Command;

fn plan_json(config: &Path, bus: &PrivateBus) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .arg("--config")
        .arg(config)
        .args(["plan", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn with_no_configuration_every_detected_database_is_quiesced_and_restores_with_every_write() {
    let fs = scratch_fs_sized(Fs::Ext4, 320);
    let run = fs.dir.path();
    let pg = PgServer::start(&fs.path("pg/data"), &run.join("pg-run"), true);
    pg.sql("CREATE TABLE rows (n bigint PRIMARY KEY)");
    let maria = MariaDb::start(&fs.path("mysql/data"), &run.join("mysql-run"), true);
    maria.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let redis = RedisServer::start(&fs.path("redis"), &run.join("redis-run"));

    let bus = PrivateBus::start(&run.join("bus")).expect("start a private bus");
    let systemd = FakeSystemd::serve(
        &bus,
        vec![
            // Debian's umbrella unit: no process of its own, nothing to quiesce.
            FakeUnit::active("postgresql.service", 0),
            FakeUnit::active("postgresql@15-main.service", pg.pid()),
            FakeUnit::active("mariadb.service", maria.child.id()),
            FakeUnit::active("redis-server.service", redis.pid()),
            FakeUnit::active("nginx.service", std::process::id()),
        ],
    );
    let config = local_image_config(&fs, "");

    let plan = plan_json(&config, &bus);
    let units = plan["databases"]["units"].as_array().unwrap();
    let detected: Vec<(&str, &str)> = units
        .iter()
        .map(|u| (u["unit"].as_str().unwrap(), u["handled_by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        detected,
        [
            ("mariadb.service", "native mariadb quiescer"),
            ("postgresql@15-main.service", "native postgresql quiescer"),
            ("redis-server.service", "native redis quiescer"),
        ],
        "{plan:#}"
    );

    let writers = [
        pg_inserter(&pg.sockets),
        mariadb_inserter(&maria.socket),
        redis_pusher(&redis.socket),
    ];
    let mut snapshot = agent_snapshot(&config, "zero-config");
    snapshot.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    let (report, acked) = snapshot_under_load(&fs, snapshot, &writers.iter().collect::<Vec<_>>(), || {
        assert_eq!(
            systemd.inhibitors_held(),
            1,
            "a shutdown inhibitor is held while frozen"
        );
    });
    let names: Vec<&str> = report["quiescers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            assert_eq!(q["resumed"], true, "{q}");
            q["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "mariadb (mariadb.service)",
            "postgresql (postgresql@15-main.service)",
            "redis (redis-server.service)"
        ]
    );
    assert!(systemd
        .calls()
        .contains(&"Inhibit shutdown:sleep delay".to_string()));
    assert_eq!(
        systemd.inhibitors_held(),
        0,
        "the inhibitor is released after the run"
    );
    // Every writer went on after the thaw without a failed write.
    for writer in writers {
        writer.wait_for(writer.acked() + 3);
        writer.stop();
    }
    drop((pg, maria, redis));

    let restored = restore(&fs, "zero-config");
    let pg = PgServer::restart(&restored.path("pg/data"), &run.join("pg-run-2"));
    pg.assert_has_rows(acked[0]);
    let maria = MariaDb::start(&restored.path("mysql/data"), &run.join("mysql-run-2"), false);
    maria.assert_has_rows(acked[1]);
    let redis = RedisServer::start(&restored.path("redis"), &run.join("redis-run-2"));
    redis.assert_has_rows(acked[2]);
}

#[test]
fn systemd_units_are_stopped_and_started_and_unknown_databases_lower_the_consistency() {
    let fs = scratch_fs(Fs::Ext4);
    let bus = PrivateBus::start(&fs.dir.path().join("bus")).expect("start a private bus");
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let systemd = FakeSystemd::serve(
        &bus,
        vec![
            FakeUnit::active("worker.service", sleeper.id()),
            FakeUnit::active("mongod.service", sleeper.id()),
        ],
    );
    let config = local_image_config(
        &fs,
        "\n[[quiescer]]\nkind = \"systemd\"\nunit = \"worker\"\nmode = \"stop\"\n",
    );
    let plan = plan_json(&config, &bus);
    let note = plan["databases"]["units"][0]["note"].as_str().unwrap();
    assert!(note.contains("no native MongoDB quiescer"), "{plan:#}");

    let out = Command::new(agent_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "filesystem", "mongod was not quiesced");
    assert!(report["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("not quiesced: mongod.service (mongodb)"));
    let jobs: Vec<String> = systemd
        .calls()
        .into_iter()
        .filter(|c| c.ends_with("worker.service"))
        .collect();
    assert_eq!(jobs, ["StopUnit worker.service", "StartUnit worker.service"]);
    assert_eq!(systemd.unit("worker.service").active_state, "active");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn a_systemd_quiescer_without_systemd_fails_before_anything_is_frozen() {
    let fs = scratch_fs(Fs::Ext4);
    let config = local_image_config(&fs, "\n[[quiescer]]\nkind = \"systemd\"\nunit = \"app\"\n");
    let out = Command::new(agent_bin())
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", fs.dir.path().join("no-bus").display()),
        )
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("systemd is not reachable") && error.contains("no-bus"),
        "{error}"
    );
    assert!(report["filesystems"]["frozen"].as_array().unwrap().is_empty());
}

/// Starts a snapshot that hangs in its window with `worker.service` stopped and a hook prepared,
/// then kills its guard (stopped first, so it cannot thaw) and the agent: everything stays
/// frozen and owed, as after a crash of both.
fn kill_agent_and_guard_mid_snapshot(config: &Path, bus: &PrivateBus, dir: &Path, name: &str) {
    let mut cmd = Command::new(agent_bin());
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("FAILPOINTS", "local-image-copy=sleep(60000)")
        .arg("--config")
        .arg(config)
        .args(["snapshot", "--json", "--name", name]);
    let (mut agent, _) = spawn_until_frozen(cmd, dir);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run/frozen.json")).unwrap()).unwrap();
    let guard = nix::unistd::Pid::from_raw(record["guard_pid"].as_u64().unwrap() as i32);
    nix::sys::signal::kill(guard, nix::sys::signal::SIGSTOP).unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    nix::sys::signal::kill(guard, nix::sys::signal::SIGKILL).unwrap();
    while process_alive(guard.as_raw() as u32) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn freezeframe_thaw_after_agent_and_guard_died_thaws_the_filesystem_then_starts_the_unit_and_thaws_the_hook()
{
    use freezeframe_tests::bus::fake_ssh;
    use std::os::unix::fs::PermissionsExt;
    let fs = scratch_fs(Fs::Ext4);
    let bus = PrivateBus::start(&fs.dir.path().join("bus")).expect("start a private bus");
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let systemd = FakeSystemd::serve(&bus, vec![FakeUnit::active("worker.service", sleeper.id())]);
    let config = local_image_config(
        &fs,
        // (Stopped rather than frozen: the cgroup freezer is not on every test machine.)
        "\n[[quiescer]]\nkind = \"systemd\"\nunit = \"worker\"\nmode = \"stop\"\n",
    );
    let hooks = fs.dir.path().join("etc/hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook_log = fs.dir.path().join("hook.log");
    let hook = hooks.join("10-app");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1\" >> {}\n", hook_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime = fs.dir.path().join("run");
    let left_as_after_a_crash = |name: &str| {
        kill_agent_and_guard_mid_snapshot(&config, &bus, fs.dir.path(), name);
        assert!(is_frozen(&fs.mountpoint));
        assert_eq!(systemd.unit("worker.service").active_state, "inactive");
        assert_eq!(std::fs::read_to_string(&hook_log).unwrap(), "freeze\n");
        std::fs::remove_file(&hook_log).unwrap();
    };
    let check_recovered = |out: &std::process::Output, how: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{how}: {stderr}");
        let recovered: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{how}: not one JSON document ({e}): {stderr}"));
        assert_eq!(
            recovered["filesystems"][0]["outcome"], "thawed",
            "{how}: {recovered:#}"
        );
        // Resumes ran after the filesystems thawed, last prepared first: the unit, then the hook.
        let resumes: Vec<&str> = recovered["resumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["resume"].as_str().unwrap())
            .collect();
        assert_eq!(resumes.len(), 2, "{how}: {recovered:#}");
        assert!(
            resumes[0].starts_with("worker.service (stopped)"),
            "{how}: {resumes:?}"
        );
        assert!(
            resumes[1].starts_with("hook ") && resumes[1].contains("10-app"),
            "{how}: {resumes:?}"
        );
        assert!(recovered["resumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true));
        assert!(!is_frozen(&fs.mountpoint), "{how}");
        assert_eq!(systemd.unit("worker.service").active_state, "active", "{how}");
        assert_eq!(std::fs::read_to_string(&hook_log).unwrap(), "thaw\n", "{how}");
        std::fs::remove_file(&hook_log).unwrap();
    };

    // Through the agent on that host (here: over a stand-in ssh to the private bus).
    left_as_after_a_crash("first");
    let mut agent = Command::new(agent_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .spawn()
        .unwrap();
    let ssh = fake_ssh(fs.dir.path(), &[("droplet", &bus)]);
    let through_agent = || {
        Command::new(cli_bin())
            .arg("--ssh-command")
            .arg(&ssh)
            .args(["-H", "droplet", "thaw", "--json"])
            .output()
            .unwrap()
    };
    // Unreachable (3) until the agent is up on its bus: a deadline, not a count of tries, as
    // the service tests wait.
    let mut out = through_agent();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while out.status.code() == Some(3) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = through_agent();
    }
    check_recovered(&out, "-H droplet thaw");
    let again = through_agent();
    assert!(again.status.success());
    let nothing: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(nothing, serde_json::json!({ "filesystems": [], "resumes": [] }));
    let _ = agent.kill();
    let _ = agent.wait();

    // On this machine with no agent answering: directly, the same way.
    left_as_after_a_crash("second");
    let out = Command::new(cli_bin())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .args(["thaw", "--json", "--runtime-dir"])
        .arg(&runtime)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directly"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_recovered(&out, "thaw with no agent");

    // A runtime directory is this machine's: with -H it is refused, and nothing is reached.
    let refused = Command::new(cli_bin())
        .arg("--ssh-command")
        .arg(&ssh)
        .args(["-H", "droplet", "thaw", "--runtime-dir", "/run/x"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
