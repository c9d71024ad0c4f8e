//! Database quiescers against real servers from Debian's packages, with their data on a
//! loop filesystem, under a write load: the captured image starts a fresh server that has
//! every write acknowledged before the snapshot request.

use crate::servers::*;
use freezeframe_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[test]
fn redis_under_writes_gives_an_image_with_every_acknowledged_push() {
    let fs = scratch_fs(Fs::Ext4);
    let run_dir = fs.dir.path().join("redis-run");
    let server = RedisServer::start(&fs.path("redis"), &run_dir);
    let config = quiescer_config(&fs, "redis", "socket", &server.socket);

    let pusher = redis_pusher(&server.socket);
    let (report, acked) = snapshot_under_load(&fs, agent_snapshot(&config, "redis"), &[&pusher], || {});
    let acked_at_freeze = acked[0];
    pusher.stop();
    assert_eq!(report["quiescers"][0]["prepared"], true);
    assert!(report["quiescers"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis"));
    drop(server);

    // A fresh server on a copy of the captured image.
    let restored = restore(&fs, "redis");
    let server = RedisServer::start(&restored.path("redis"), &fs.dir.path().join("redis-run-2"));
    server.assert_has_rows(acked_at_freeze);
}

/// A local-image configuration freezing `fs`, with one `[[quiescer]]` of `kind` whose `key`
/// names `value` (a socket or socket folder).
fn quiescer_config(fs: &ScratchFs, kind: &str, key: &str, value: &Path) -> PathBuf {
    local_image_config(
        fs,
        &format!(
            "\n[[quiescer]]\nkind = \"{kind}\"\n{key} = {:?}\n",
            value.display().to_string()
        ),
    )
}

#[test]
fn redis_data_outside_the_frozen_filesystems_is_refused_in_preflight() {
    let fs = scratch_fs(Fs::Ext4);
    // The data directory is on this machine's own disk, which this run does not freeze.
    let server = RedisServer::start(
        &fs.dir.path().join("redis-data"),
        &fs.dir.path().join("redis-run"),
    );
    let config = quiescer_config(&fs, "redis", "socket", &server.socket);
    let report = snapshot_json(&config);
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("not on a filesystem being frozen"), "{error}");

    // A server that is not there fails in preflight too, before anything is touched.
    drop(server);
    let report = snapshot_json(&config);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to Redis"),
        "{report:#}"
    );
}

#[test]
fn postgresql_under_writes_gives_an_image_with_every_committed_row() {
    let fs = scratch_fs(Fs::Ext4);
    let server = PgServer::start(&fs.path("pg/data"), &fs.dir.path().join("pg-run"), true);
    server.sql("CREATE TABLE rows (n bigint PRIMARY KEY)");
    let config = quiescer_config(&fs, "postgresql", "socket_dir", &server.sockets);

    let writer = pg_inserter(&server.sockets);
    let (report, acked) = snapshot_under_load(&fs, agent_snapshot(&config, "pg"), &[&writer], || {});
    let acked_at_freeze = acked[0];
    writer.stop();
    assert!(report["quiescers"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("postgresql"));
    drop(server);

    let restored = restore(&fs, "pg");
    let server = PgServer::restart(&restored.path("pg/data"), &fs.dir.path().join("pg-run-2"));
    server.assert_has_rows(acked_at_freeze);
}

#[test]
fn postgresql_data_outside_the_frozen_filesystems_is_refused_in_preflight() {
    let fs = scratch_fs(Fs::Ext4);
    let server = PgServer::start(
        &fs.dir.path().join("pg/data"),
        &fs.dir.path().join("pg-run"),
        true,
    );
    let config = quiescer_config(&fs, "postgresql", "socket_dir", &server.sockets);
    let report = snapshot_json(&config);
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("PostgreSQL's data directory") && error.contains("not on a filesystem being frozen"),
        "{error}"
    );
}

fn mariadb_config(fs: &ScratchFs, server: &MariaDb, extra: &str) -> PathBuf {
    let config = quiescer_config(fs, "mariadb", "socket", &server.socket);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(extra);
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn mariadb_under_writes_blocks_writers_without_failing_them_and_keeps_every_commit() {
    let fs = scratch_fs_sized(Fs::Ext4, 160);
    let server = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    server.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let config = mariadb_config(&fs, &server, "");

    // Every INSERT must succeed: the lock only delays them.
    let writer = mariadb_inserter(&server.socket);
    let (report, acked) = snapshot_under_load(&fs, agent_snapshot(&config, "maria"), &[&writer], || {});
    let acked_at_freeze = acked[0];
    // The writer goes on after the thaw: the rows after the freeze arrive too.
    writer.wait_for(writer.acked() + 5);
    writer.stop();
    let details = report["quiescers"][0]["details"].as_str().unwrap_or_default();
    assert!(
        details.starts_with("binary log position mysql-bin.0"),
        "{report:#}"
    );
    drop(server);

    let restored = restore(&fs, "maria");
    let server = MariaDb::start(
        &restored.path("mysql/data"),
        &fs.dir.path().join("mysql-run-2"),
        false,
    );
    server.assert_has_rows(acked_at_freeze);
}

#[test]
fn a_mariadb_lock_that_cannot_be_taken_aborts_and_blocks_no_one() {
    let fs = scratch_fs_sized(Fs::Ext4, 160);
    let server = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    server.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let config = mariadb_config(&fs, &server, "lock_wait_timeout = \"1s\"\n");
    server.sql("INSERT INTO app.rows VALUES (1), (2), (3)");
    // Another session holds a table lock, so FLUSH TABLES WITH READ LOCK has to wait.
    let socket = server.socket.clone();
    let long = std::thread::spawn(move || {
        Command::new("mariadb")
            .arg(format!("--socket={}", socket.display()))
            .args([
                "--user=root",
                "-e",
                "LOCK TABLES app.rows WRITE; SELECT SLEEP(4); UNLOCK TABLES",
            ])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let report = snapshot_json(&config);
    assert_eq!(report["failed_phase"], "quiesce", "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("FLUSH TABLES WITH READ LOCK did not complete"),
        "{error}"
    );
    assert!(
        error.contains("Lock wait timeout exceeded"),
        "the server's own words: {error}"
    );
    assert_eq!(report["quiescers"][0]["resumed"], true, "{report:#}");
    // No lock and no pending lock request is left: a write goes through at once.
    let started = std::time::Instant::now();
    server.sql("INSERT INTO app.rows VALUES (4)");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a writer was left waiting behind the lock"
    );
    long.join().unwrap();
}
