//! Database quiescers against real servers from Debian's packages, with their data on a
//! loop filesystem, under a write load: the captured image starts a fresh server that has
//! every write acknowledged before the snapshot request.

use crate::servers::*;
use freezeframe_agent::loop_mount::{Attach, LoopMount};
use freezeframe_tests::*;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
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
    // verify finds the dump, checks it and loads it.
    let checked = verified_database(&fs, "redis", "redis");
    assert_eq!(checked["keys"], 1, "{checked:#}");
    drop(server);

    // A fresh server on a copy of the captured image.
    let restored = restore(&fs, "redis");
    let server = RedisServer::start(&restored.path("redis"), &fs.dir.path().join("redis-run-2"));
    server.assert_has_rows(acked_at_freeze);
}

/// A local-image configuration freezing `fs`, with one `[[quiescer]]` of `kind` whose `key`
/// names `value` (a socket or socket folder).
/// The runs the agent's history recorded for `fs`'s configuration.
fn recorded_runs(fs: &ScratchFs) -> Vec<serde_json::Value> {
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fs.dir.path().join("etc/history.json")).unwrap()).unwrap();
    history["runs"].as_array().cloned().unwrap_or_default()
}

fn quiescer_config(fs: &ScratchFs, kind: &str, key: &str, value: &Path) -> PathBuf {
    quiescers_config(fs, &[(kind, key, value)])
}

/// The same with a `[[quiescer]]` for each `(kind, key, value)`, in order.
fn quiescers_config(fs: &ScratchFs, quiescers: &[(&str, &str, &Path)]) -> PathBuf {
    let sections: String = quiescers
        .iter()
        .map(|(kind, key, value)| {
            format!(
                "\n[[quiescer]]\nkind = \"{kind}\"\n{key} = {:?}\n",
                value.display().to_string()
            )
        })
        .collect();
    local_image_config(fs, &sections)
}

/// PostgreSQL's and Redis's quiescers, in that order.
fn pg_and_redis_config(fs: &ScratchFs, pg: &PgServer, cache: &RedisServer) -> PathBuf {
    quiescers_config(
        fs,
        &[
            ("postgresql", "socket_dir", &pg.sockets),
            ("redis", "socket", &cache.socket),
        ],
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
    // The agent's history keeps where the database stood, to match a restore to a replica.
    let position = &recorded_runs(&fs)[0]["positions"][0];
    assert_eq!(
        position["lsn"], report["quiescers"][0]["log_position"]["lsn"],
        "{position:#}"
    );
    assert!(position["lsn"].as_str().unwrap().contains('/'), "{position:#}");
    // verify recovers it from the image while the server it came from still runs (its pid
    // file in the image names a live process), and reads every committed row.
    let checked = verified_database(&fs, "pg", "postgresql");
    assert_eq!(checked["path"], "/pg/data", "{checked:#}");
    // Crash recovery ran: the WAL replayed from the quiescer's checkpoint is measured.
    assert!(checked["replayed_bytes"].is_u64(), "{checked:#}");
    assert!(
        rows_in(&checked, "postgres.public.rows") >= acked_at_freeze,
        "{checked:#}"
    );
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
    assert_eq!(recorded_runs(&fs)[0]["positions"][0]["details"], details);
    // verify runs InnoDB's recovery on the image's overlay, checks every table, reads every row.
    let checked = verified_database(&fs, "maria", "mariadb");
    assert!(rows_in(&checked, "app.rows") >= acked_at_freeze, "{checked:#}");
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
    // Another session holds a table lock, so FLUSH TABLES WITH READ LOCK has to wait: until it
    // is killed below, however long the snapshot takes to get there on a loaded machine.
    let socket = server.socket.clone();
    let long = std::thread::spawn(move || {
        Command::new("mariadb")
            .arg(format!("--socket={}", socket.display()))
            .args([
                "--user=root",
                "-e",
                "LOCK TABLES app.rows WRITE; SELECT SLEEP(600); UNLOCK TABLES",
            ])
            .output()
            .unwrap()
    });
    // Its sleep says the lock is taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let id = server.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE STATE = 'User sleep'");
        if !id.is_empty() {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock session did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let report = snapshot_json(&config);
    server.sql(&format!("KILL {holder}"));
    long.join().unwrap();
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
    // No lock and no pending lock request is left (one would have been granted when the table
    // lock went): a write goes through, at once on an idle machine, and here within a bound
    // that only a lock held by someone can reach.
    let started = std::time::Instant::now();
    server.sql("SET SESSION lock_wait_timeout = 30; INSERT INTO app.rows VALUES (4)");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a writer was left waiting behind the lock"
    );
}

#[test]
fn verify_fails_databases_damaged_in_the_image_and_says_which_check_failed() {
    let fs = scratch_fs(Fs::Ext4);
    let pg = PgServer::start(&fs.path("pg/data"), &fs.dir.path().join("pg-run"), true);
    pg.sql("CREATE TABLE rows AS SELECT n::bigint FROM generate_series(1, 20000) n");
    // Hint bits and the visibility map set now, so that nothing rewrites the table's pages
    // after the quiescer's checkpoint and recovery has no page image to repair them from.
    pg.sql("VACUUM (FREEZE) rows");
    let table_file = pg.sql("SELECT pg_relation_filepath('rows')");
    let cache = RedisServer::start(&fs.path("redis"), &fs.dir.path().join("redis-run"));
    let mut conn = BufReader::new(UnixStream::connect(&cache.socket).unwrap());
    for n in 0..2000 {
        redis(&mut conn, &["SET", &format!("key:{n}"), &"x".repeat(64)]);
    }
    let config = pg_and_redis_config(&fs, &pg, &cache);
    let out = agent_snapshot(&config, "both").output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["consistency"], "application", "{report:#}");
    drop(pg);
    drop(cache);

    let image = image_of(&fs, "both");
    let (code, found) = verify(&image);
    assert_eq!(code, 0, "the undamaged image: {found:#}");
    assert_eq!(found["databases"].as_array().unwrap().len(), 2, "{found:#}");

    // A copy with a page of the table and the middle of the dump overwritten.
    let damaged = damaged_copy(&image, fs.dir.path(), |root| {
        // Block 3's pd_lower and pd_upper: a page header no server accepts.
        overwrite(&root.join("pg/data").join(table_file.trim()), 3 * 8192 + 12, 4);
        let dump = root.join("redis/dump.rdb");
        let len = std::fs::metadata(&dump).unwrap().len();
        overwrite(&dump, len / 2, 16);
    });
    let before = std::fs::read(&damaged).unwrap();
    let (code, found) = verify(&damaged);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["verified"], false);
    assert_eq!(
        found["probe"], "inside-window",
        "the markers are intact: {found:#}"
    );
    let reasons = found["reasons"].to_string();
    assert!(
        reasons.contains("PostgreSQL at /pg/data") && reasons.contains("pg_amcheck"),
        "{found:#}"
    );
    assert!(
        reasons.contains("Redis at /redis/dump.rdb") && reasons.contains("redis-check-rdb"),
        "{found:#}"
    );
    assert!(
        std::fs::read(&damaged).unwrap() == before,
        "verify changed the image"
    );
}

/// WAL damaged before the position the quiescer recorded ends PostgreSQL's recovery early and
/// without an error: the server starts, every check passes, committed rows are gone. The
/// recorded position (in the report and the `before` marker) makes verify see it.
#[test]
fn verify_fails_an_image_whose_wal_is_damaged_before_the_snapshot_point() {
    let fs = scratch_fs(Fs::Ext4);
    let pg = PgServer::start(&fs.path("pg/data"), &fs.dir.path().join("pg-run"), true);
    pg.sql("CREATE TABLE rows (n bigint)");
    pg.sql("CHECKPOINT");
    // Committed after the last checkpoint (the quiescer makes none here): only the WAL has them.
    pg.sql("INSERT INTO rows SELECT n FROM generate_series(1, 20000) n");
    let config = local_image_config(
        &fs,
        &format!(
            "\n[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\ncheckpoint = false\n",
            pg.sockets.display().to_string()
        ),
    );
    let out = agent_snapshot(&config, "wal").output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["consistency"], "application", "{report:#}");
    let position = &report["quiescers"][0]["log_position"];
    assert_eq!(
        position["data_directory"],
        fs.path("pg/data").display().to_string(),
        "{report:#}"
    );
    let lsn = position["lsn"].as_str().unwrap().to_string();
    drop(pg);

    let image = image_of(&fs, "wal");
    let (code, found) = verify(&image);
    assert_eq!(code, 0, "the undamaged image: {found:#}");
    let checked = &found["databases"][0];
    assert!(
        checked["checks"]
            .to_string()
            .contains(&format!("past {lsn} where it stood")),
        "{checked:#}"
    );
    assert_eq!(rows_in(checked, "postgres.public.rows"), 20000);

    // A copy whose WAL page holding the record just before that position is overwritten.
    let (high, low) = lsn.split_once('/').unwrap();
    let at = (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap();
    let segment = format!("{:08X}{:08X}{:08X}", 1, at >> 32, (at >> 24) & 0xFF);
    let page = ((at - 1) & 0xFF_FFFF) & !8191;
    let damaged = damaged_copy(&image, fs.dir.path(), |root| {
        // The page header's magic: recovery takes it for the end of the WAL.
        overwrite(&root.join("pg/data/pg_wal").join(&segment), page, 2);
    });
    let (code, found) = verify(&damaged);
    assert_eq!(code, 1, "{found:#}");
    let reasons = found["reasons"].to_string();
    assert!(
        reasons.contains("PostgreSQL at /pg/data")
            && reasons.contains("recovery ended at WAL")
            && reasons.contains(&format!("before {lsn}")),
        "{found:#}"
    );
}

/// A sparse copy of `image` beside it, mounted in `dir` while `damage` changes files under the
/// root it is given, then unmounted.
fn damaged_copy(image: &Path, dir: &Path, damage: impl FnOnce(&Path)) -> PathBuf {
    let damaged = image.with_extension("damaged.img");
    run(
        "cp",
        &[
            "--sparse=always",
            image.to_str().unwrap(),
            damaged.to_str().unwrap(),
        ],
    );
    let view = LoopMount::attach(&damaged, &dir.join("damaging"), Attach::default()).expect("mount the copy");
    damage(view.mountpoint());
    drop(view);
    damaged
}

/// Overwrites `len` bytes of `file` at `offset` with 0xFF, synced.
fn overwrite(file: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&vec![0xFF; len], offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn verify_on_a_restored_machine_checks_the_databases_its_boot_started() {
    let fs = scratch_fs_sized(Fs::Ext4, 320);
    let pg = PgServer::start(&fs.path("pg/data"), &fs.dir.path().join("pg-run"), true);
    pg.sql("CREATE TABLE rows AS SELECT n::bigint FROM generate_series(1, 500) n");
    // verify installs nothing into a running server: amcheck is there already, or not run.
    pg.sql("CREATE EXTENSION amcheck");
    let cache = RedisServer::start(&fs.path("redis"), &fs.dir.path().join("redis-run"));
    let mut conn = BufReader::new(UnixStream::connect(&cache.socket).unwrap());
    for n in 0..10 {
        redis(&mut conn, &["SET", &format!("key:{n}"), "v"]);
    }
    let maria = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    maria.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    let values: Vec<String> = (1..=300).map(|n| format!("({n})")).collect();
    maria.sql(&format!("INSERT INTO app.rows VALUES {}", values.join(",")));
    // The restored machine has the same configuration: its quiescers name its databases.
    let config = quiescers_config(
        &fs,
        &[
            ("postgresql", "socket_dir", &pg.sockets),
            ("redis", "socket", &cache.socket),
            ("mariadb", "socket", &maria.socket),
        ],
    );
    let out = agent_snapshot(&config, "machine").output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["consistency"], "application", "{report:#}");
    let (pg_sockets, redis_socket) = (pg.sockets.clone(), cache.socket.clone());
    let maria_socket = maria.socket.clone();
    drop(pg);
    drop(cache);
    drop(maria);

    // The restored machine's configuration (rewritten in place) names no database: verify learns
    // from the snapshot's marker which ones were quiesced (as for databases found through
    // systemd), and checks them.
    let bare = local_image_config(&fs, "");
    // Its "boot", in a mount namespace of its own: the restored disk where the filesystem was,
    // and the databases started from it as their services would; then verify, as a drill runs
    // it there.
    let copy = image_of(&fs, "machine").with_extension("restored.img");
    run(
        "cp",
        &[
            "--sparse=always",
            image_of(&fs, "machine").to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    let mountpoint = fs.mountpoint.display().to_string();
    let redis_dir = redis_socket.parent().unwrap().display().to_string();
    let boot = format!(
        "set -e\n{new_boot}dev=$(losetup --find --show {copy})\ntrap 'umount -l {mp}; losetup -d $dev' EXIT\n\
         mount $dev {mp}\n\
         runuser -u postgres -- {pg_ctl} -w -D {mp}/pg/data -l {pg_sockets}/restored.log \
           -o \"-p 5432 -k {pg_sockets} -c listen_addresses=''\" start >/dev/null\n\
         redis-server --port 0 --unixsocket {redis_socket} --dir {mp}/redis --daemonize yes \
           --pidfile {redis_dir}/restored.pid --logfile {redis_dir}/restored.log --appendonly yes --save ''\n\
         mariadbd --user=mysql --skip-networking --log-bin=mysql-bin --innodb-log-file-size=8M \
           --datadir={mp}/mysql/data --socket={maria_socket} --pid-file={maria_dir}/restored.pid \
           --tmpdir={maria_dir} --log-error={maria_dir}/restored.log >/dev/null 2>&1 &\n\
         set +e\n{agent} --config {config} verify --json; status=$?\n\
         runuser -u postgres -- {pg_ctl} -D {mp}/pg/data stop -m fast >/dev/null\n\
         redis-cli -s {redis_socket} shutdown nosave >/dev/null 2>&1\n\
         mariadb-admin --socket={maria_socket} shutdown >/dev/null 2>&1; wait\nexit $status\n",
        copy = copy.display(),
        mp = mountpoint,
        pg_ctl = freezeframe_tests::postgres::pg_bin("pg_ctl").display(),
        pg_sockets = pg_sockets.display(),
        redis_socket = redis_socket.display(),
        maria_socket = maria_socket.display(),
        maria_dir = maria_socket.parent().unwrap().display(),
        agent = agent_bin().display(),
        config = bare.display(),
        new_boot = NEW_BOOT,
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &boot])
        .output()
        .unwrap();
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{found:#}");
    assert_eq!(found["probe"], "inside-window", "{found:#}");
    let databases = found["databases"].as_array().unwrap();
    let postgres = databases.iter().find(|d| d["kind"] == "postgresql").unwrap();
    assert_eq!(postgres["ok"], true, "{postgres:#}");
    assert_eq!(postgres["path"], format!("{mountpoint}/pg/data"));
    assert!(rows_in(postgres, "postgres.public.rows") == 500, "{postgres:#}");
    let checks = postgres["checks"].to_string();
    assert!(
        checks.contains("recovery finished") && checks.contains("pg_amcheck: no corruption in 1 databases"),
        "{checks}"
    );
    let cached = databases.iter().find(|d| d["kind"] == "redis").unwrap();
    assert_eq!(cached["ok"], true, "{cached:#}");
    assert_eq!(cached["keys"], 10, "{cached:#}");
    assert!(
        cached["checks"].to_string().contains("redis-check-rdb"),
        "{cached:#}"
    );
    // MariaDB as its boot started it (InnoDB recovery, then the checks, through the socket the
    // quiescer uses), each table counted.
    let mariadb = databases.iter().find(|d| d["kind"] == "mariadb").unwrap();
    assert_eq!(mariadb["ok"], true, "{mariadb:#}");
    assert_eq!(rows_in(mariadb, "app.rows"), 300, "{mariadb:#}");

    // A machine whose databases did not come up: said, after the wait given (booted anew, so
    // it is not the machine that took the snapshot, still in that boot).
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "{NEW_BOOT}exec {} --config {} verify --json --wait 1s",
            agent_bin().display(),
            bare.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reasons = found["reasons"].to_string();
    assert!(
        reasons.contains("PostgreSQL: PostgreSQL at")
            && reasons.contains("did not accept connections within 1s (`--wait`)"),
        "{found:#}"
    );
    assert!(
        reasons.contains("Redis: Redis at") && reasons.contains("did not answer"),
        "{found:#}"
    );
}
