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
