//! Databases in containers, found and quiesced with no `[[quiescer]]`: a Docker engine of the
//! test's own runs PostgreSQL, MariaDB and Redis containers (Debian's packages, imported with
//! no registry), each on a named volume backed by a loop filesystem, under writes. The
//! snapshot is application-consistent, names each container, and its image gives fresh
//! servers every acknowledged write. A container that only looks like a database is not
//! trusted, and what it does with what it is given does not reach the agent's output.

use crate::servers::*;
use freezeframe_tests::docker::{Dockerd, DATABASES_IMAGE};
use freezeframe_tests::*;
use std::path::Path;
use std::process::Command;

const PG: &str = r#"set -e; D=/var/lib/postgresql/data; mkdir -p /var/run/postgresql
chown postgres:postgres $D /var/run/postgresql
[ -s $D/PG_VERSION ] || setpriv --reuid=postgres --regid=postgres --init-groups \
  /usr/lib/postgresql/15/bin/initdb -A trust --no-sync -D $D >/dev/null
exec setpriv --reuid=postgres --regid=postgres --init-groups /usr/lib/postgresql/15/bin/postgres \
  -D $D -c listen_addresses= -k /var/run/postgresql"#;

const MARIADB: &str = r#"set -e; mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld /var/lib/mysql
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
  --auth-root-authentication-method=socket --skip-test-db --innodb-log-file-size=8M >/dev/null
exec mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking --innodb-log-file-size=8M \
  --log-bin=mysql-bin"#;

const REDIS: &str = r#"set -e; mkdir -p /run/redis; chown redis:redis /data /run/redis
exec setpriv --reuid=redis --regid=redis --init-groups redis-server --bind 127.0.0.1 --port 6379 \
  --unixsocket /run/redis/redis.sock --unixsocketperm 777 --dir /data --save '' --appendonly no"#;

/// A process named like MariaDB's server that is not, and a `mariadb` client that repeats the
/// password it is given.
const IMPOSTOR: &str = r#"cp /bin/sleep /tmp/mariadbd
printf '#!/bin/sh\necho "$MYSQL_PWD"; echo "$MYSQL_PWD" >&2; exit 1\n' > /usr/local/bin/mariadb
chmod 755 /usr/local/bin/mariadb; exec /tmp/mariadbd infinity"#;

/// Starts container `name` running `script`, with the volume `volume` (backed by `backing`) at
/// `at`.
fn run_container(
    engine: &Dockerd,
    name: &str,
    volume: &str,
    backing: &Path,
    at: &str,
    script: &str,
    extra: &[&str],
) {
    std::fs::create_dir_all(backing).unwrap();
    let device = format!("device={}", backing.display());
    engine.docker(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &device,
        volume,
    ]);
    let mount = format!("{volume}:{at}");
    let mut args = vec![
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        name,
        "-v",
        &mount,
    ];
    args.extend_from_slice(extra);
    args.extend([DATABASES_IMAGE, "sh", "-c", script]);
    engine.docker(&args);
}

/// A `local-image` configuration (`local_image_config`) whose agent asks `engine` for its
/// containers, with `extra` appended.
fn engine_config(fs: &ScratchFs, engine: &Dockerd, extra: &str) -> std::path::PathBuf {
    let socket = engine.socket.display().to_string();
    local_image_config(fs, &format!("container_sockets = [{socket:?}]\n{extra}"))
}

/// Waits until `cmd` run in `container` succeeds.
fn wait_ready(engine: &Dockerd, container: &str, cmd: &[&str]) {
    for _ in 0..600 {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        let ok = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", engine.socket.display()))
            .args(&args)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "{container} did not become ready: {}",
        engine.docker(&["logs", container])
    );
}

#[test]
fn databases_in_containers_are_found_quiesced_and_restored_with_no_configuration() {
    require_root();
    if let Some(why) = freezeframe_tests::docker::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let fs = scratch_fs_sized(Fs::Ext4, 512);
    // Declared after the filesystem, so it stops (and lets go of the volumes) first.
    let engine = Dockerd::start(&fs.dir.path().join("docker"));
    engine.import_databases();
    // PostgreSQL's socket where this machine's `postgres` user, who writes the rows, reaches it.
    let pg_sockets = scratch();
    run("chmod", &["0755", pg_sockets.path().to_str().unwrap()]);
    let pg_bind = format!("{}:/var/run/postgresql", pg_sockets.path().display());
    let pg_volume = fs.path("pg");
    run_container(
        &engine,
        "pg",
        "pg-data",
        &pg_volume,
        "/var/lib/postgresql/data",
        PG,
        &["-v", &pg_bind],
    );
    run_container(
        &engine,
        "maria",
        "maria-data",
        &fs.path("mysql"),
        "/var/lib/mysql",
        MARIADB,
        &[],
    );
    run_container(
        &engine,
        "cache",
        "cache-data",
        &fs.path("redis"),
        "/data",
        REDIS,
        &[],
    );
    wait_ready(
        &engine,
        "pg",
        &[
            "psql",
            "-U",
            "postgres",
            "-c",
            "CREATE TABLE rows (n bigint PRIMARY KEY)",
        ],
    );
    wait_ready(&engine, "maria", &["mariadb", "-e", "CREATE DATABASE app"]);
    engine.docker(&[
        "exec",
        "maria",
        "mariadb",
        "-e",
        "CREATE TABLE app.rows (n bigint PRIMARY KEY) ENGINE=InnoDB",
    ]);
    wait_ready(&engine, "cache", &["redis-cli", "PING"]);

    // The test (root, trusting its own containers) writes through their sockets from here.
    let inside =
        |name: &str, path: &str| Path::new(&format!("/proc/{}/root", engine.pid_of(name))).join(path);
    let pg = pg_inserter(pg_sockets.path());
    let maria = mariadb_inserter(&inside("maria", "run/mysqld/mysqld.sock"));
    let cache = redis_pusher(&inside("cache", "run/redis/redis.sock"));
    for writer in [&pg, &maria, &cache] {
        writer.wait_for(3);
    }
    let config = engine_config(&fs, &engine, "");
    // Without AOF, Redis keeps what its save held: everything acknowledged before the run.
    let cache_before = cache.acked();
    let (report, acked) = snapshot_under_load(&fs, agent_snapshot(&config, "boxed"), &[&pg, &maria], || {});
    for writer in [pg, maria, cache] {
        writer.stop();
    }
    let names: Vec<&str> = report["quiescers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["prepared"] == true)
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    for name in [
        "postgresql in container pg",
        "mariadb in container maria",
        "redis in container cache",
    ] {
        assert!(names.contains(&name), "{name} not among {names:?}: {report:#}");
    }
    drop(engine);

    // Fresh servers of this machine on a copy of the image.
    let restored = restore(&fs, "boxed");
    run(
        "chown",
        &["-R", "postgres:postgres", restored.path("pg").to_str().unwrap()],
    );
    run(
        "chown",
        &["-R", "mysql:mysql", restored.path("mysql").to_str().unwrap()],
    );
    let pg = PgServer::restart(&restored.path("pg"), &fs.dir.path().join("pg-run"));
    pg.assert_has_rows(acked[0]);
    drop(pg);
    let maria = MariaDb::start(&restored.path("mysql"), &fs.dir.path().join("maria-run"), false);
    maria.assert_has_rows(acked[1]);
    drop(maria);
    let cache = RedisServer::start_saved(&restored.path("redis"), &fs.dir.path().join("redis-run"));
    cache.assert_has_rows(cache_before);
}

#[test]
fn a_container_that_only_looks_like_a_database_is_not_trusted() {
    require_root();
    if let Some(why) = freezeframe_tests::docker::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let fs = scratch_fs(Fs::Ext4);
    let engine = Dockerd::start(&fs.dir.path().join("docker"));
    engine.import_databases();
    let canary = format!("canary-{}", std::process::id());
    let env = format!("MARIADB_ROOT_PASSWORD={canary}");
    engine.docker(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        "impostor",
        "-e",
        &env,
        "--label",
        "freezeframe.quiesce=\x1b[2Jx",
        DATABASES_IMAGE,
        "sh",
        "-c",
        IMPOSTOR,
    ]);
    let config = engine_config(&fs, &engine, "");
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains(&canary),
        "the password reached the agent's output: {text}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_ne!(report["consistency"], "application", "{report:#}");
    assert!(
        text.contains("mariadb in container impostor") && text.contains("did not answer as mariadb"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
}

/// A writer with no database in it: an application container whose pause is its quiescing.
const APP: &str = "while :; do date +%s%N > /data/last; sleep 0.05; done";

/// Whether `container` is paused, as the engine says.
fn paused(engine: &Dockerd, container: &str) -> bool {
    engine.docker(&["inspect", "-f", "{{.State.Paused}}", container]) == "true"
}

/// Starts the agent's `snapshot --json` held `hold_ms` after its freeze, and waits until the
/// engine says `container` is paused (failing if the agent ends first).
fn snapshot_held_until_paused(
    config: &Path,
    hold_ms: u64,
    engine: &Dockerd,
    container: &str,
) -> std::process::Child {
    let mut agent = Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .args(["snapshot", "--json"])
        .env("FAILPOINTS", format!("after-freeze=sleep({hold_ms})"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !paused(engine, container) {
        if let Some(status) = agent.try_wait().unwrap() {
            let out = agent.wait_with_output().unwrap();
            panic!(
                "the agent ended ({status}) and {container} was never seen paused: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{container} was never paused"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    agent
}

#[test]
fn a_container_labelled_pause_is_paused_across_the_window_and_one_labelled_none_is_left_alone() {
    require_root();
    if let Some(why) = freezeframe_tests::docker::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let fs = scratch_fs(Fs::Ext4);
    let engine = Dockerd::start(&fs.dir.path().join("docker"));
    engine.import_databases();
    for (name, label, script) in [
        ("app", "freezeframe.quiesce=pause", APP),
        ("cache", "freezeframe.quiesce=none", REDIS),
    ] {
        std::fs::create_dir_all(fs.path(name)).unwrap();
        let data = format!("{}:/data", fs.path(name).display());
        engine.docker(&[
            "run",
            "-d",
            "--init",
            "--network",
            "none",
            "--name",
            name,
            "--label",
            label,
            "-v",
            &data,
            DATABASES_IMAGE,
            "sh",
            "-c",
            script,
        ]);
    }
    wait_ready(&engine, "cache", &["redis-cli", "PING"]);
    let config = engine_config(&fs, &engine, "");

    let plan = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["plan", "--json"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&plan.stderr)));
    let lines: Vec<&str> = plan["quiesce"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(lines.contains(&"container app (pause)"), "{plan:#}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("container cache: left alone") && l.contains("freezeframe.quiesce=none")),
        "{plan:#}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("redis in container")),
        "{plan:#}"
    );

    let agent = snapshot_held_until_paused(&config, 3000, &engine, "app");
    // Paused while the run holds its window, and by nothing else.
    assert!(!paused(&engine, "cache"));
    let out = agent.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application", "{report:#}");
    let app = report["quiescers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "container app (pause)")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(app["prepared"], true, "{report:#}");
    assert_eq!(app["resumed"], true, "{report:#}");
    assert!(!paused(&engine, "app"), "unpaused after the run");
}

#[test]
fn a_container_a_killed_agent_left_paused_is_unpaused_by_thaw() {
    require_root();
    if let Some(why) = freezeframe_tests::docker::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let fs = scratch_fs(Fs::Ext4);
    let engine = Dockerd::start(&fs.dir.path().join("docker"));
    engine.import_databases();
    engine.docker(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        "worker",
        DATABASES_IMAGE,
        "sh",
        "-c",
        "sleep infinity",
    ]);
    // Chosen by configuration, with no label (mode "pause" is the default).
    let config = engine_config(
        &fs,
        &engine,
        "\n[[quiescer]]\nkind = \"container\"\nname = \"worker\"\n",
    );
    let mut agent = snapshot_held_until_paused(&config, 15000, &engine, "worker");
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(paused(&engine, "worker"), "a dead agent cannot unpause");
    // What the unit's ExecStopPost runs.
    let thaw = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .arg("thaw")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&thaw.stdout);
    assert!(
        thaw.status.success(),
        "thaw failed: {text}{}",
        String::from_utf8_lossy(&thaw.stderr)
    );
    assert!(text.contains("(paused): unpause"), "{text}");
    assert!(!paused(&engine, "worker"), "thaw unpaused it: {text}");
}

#[test]
fn an_image_cannot_label_itself_out_of_being_quiesced() {
    require_root();
    if let Some(why) = freezeframe_tests::docker::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let fs = scratch_fs(Fs::Ext4);
    let engine = Dockerd::start(&fs.dir.path().join("docker"));
    engine.import_databases();
    // An image whose author labels it to be left alone (and to be paused: the same key, one
    // value), as a public image could.
    engine.docker(&["create", "--name", "base", DATABASES_IMAGE, "true"]);
    engine.docker(&[
        "commit",
        "--change",
        "LABEL freezeframe.quiesce=none",
        "base",
        "local/hostile:1",
    ]);
    std::fs::create_dir_all(fs.path("cache")).unwrap();
    let data = format!("{}:/data", fs.path("cache").display());
    engine.docker(&[
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--name",
        "cache",
        "-v",
        &data,
        "local/hostile:1",
        "sh",
        "-c",
        REDIS,
    ]);
    wait_ready(&engine, "cache", &["redis-cli", "PING"]);
    let config = engine_config(&fs, &engine, "");
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let quiesced = report["quiescers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "redis in container cache" && q["prepared"] == true);
    assert!(quiesced, "the image's own label was obeyed: {report:#}");
}
