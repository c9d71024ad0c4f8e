//! More of the fault-injection suite: a full target filesystem, TLS and DNS failures of the
//! API (DNS in a network namespace of the test's own, so nothing leaves the machine), the
//! agent SIGKILLed while MariaDB's read lock is held, and databases that go down mid-run.

use crate::servers::*;
use freezeframe_tests::sim::{Capture, SimConfig};
use freezeframe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_full_target_filesystem_is_snapshotted_and_stays_usable() {
    let fs = scratch_fs(Fs::Ext4);
    // Fill it to ENOSPC: the agent writes nothing to its targets, so a full one is no obstacle.
    let filled = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", fs.path("filler").display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&filled.stderr).contains("No space left"),
        "the disk is full"
    );
    let report = snapshot_json(&local_image_config(&fs, ""));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    std::fs::remove_file(fs.path("filler")).unwrap();
    std::fs::write(fs.path("after"), b"writable again").unwrap();
}

/// A DigitalOcean configuration for `fs` whose API and metadata are at `url`.
fn api_config(fs: &ScratchFs, url: &str) -> std::path::PathBuf {
    let token = fs.dir.path().join("token");
    std::fs::write(&token, "dop_v1_fault").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = fs.dir.path().join("etc/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "{kept}[agent]\nruntime_dir = {:?}\n[freeze]\nmountpoints = [{:?}]\n[quiesce]\nhooks_dir = {:?}\n\
             [digitalocean]\napi_url = {url:?}\nmetadata_url = {url:?}\ntoken_file = {:?}\napi_timeout = \"3s\"\n",
            fs.dir.path().join("run").display().to_string(),
            fs.mountpoint.display().to_string(),
            fs.dir.path().join("etc/hooks.d").display().to_string(),
            token.display().to_string(),
            kept = kept_here(fs.dir.path()),
        ),
    )
    .unwrap();
    config
}

fn assert_failed_before_freezing(report: &serde_json::Value, expected: &str) {
    assert_eq!(report["failed_phase"], "preflight", "{report:#}");
    assert!(report["error"].as_str().unwrap().contains(expected), "{report:#}");
    assert!(report["filesystems"]["frozen"].as_array().unwrap().is_empty());
}

#[test]
fn tls_and_dns_failures_fail_in_preflight_before_anything_freezes() {
    let fs = scratch_fs(Fs::Ext4);
    let images = fs.dir.path().join("sim-images");
    std::fs::create_dir_all(&images).unwrap();
    let sim = SimServer::start(SimConfig {
        token: "dop_v1_fault".into(),
        droplet_id: 3164444,
        droplet_name: "web-1".into(),
        disk: None,
        image_dir: images,
        action_delay: Duration::ZERO,
        capture: Capture::Registration,
        latency: Duration::ZERO,
        faults: Vec::new(),
        volumes: Vec::new(),
        fleet: Vec::new(),
        rate_limit: None,
    });
    // TLS to a server that speaks plain HTTP: the handshake fails.
    let https = sim.url.replace("http://", "https://");
    let report = snapshot_json(&api_config(&fs, &https));
    assert_failed_before_freezing(&report, "cannot tell which Droplet this is");
    let chain = report["error"].as_str().unwrap().to_lowercase();
    // Named as a TLS failure, with what to check.
    assert!(
        chain.contains("tls handshake with") && chain.contains("scheme"),
        "{chain}"
    );

    // DNS: a network namespace with nothing but a loopback, so no name resolves and no query
    // leaves this machine.
    let config = api_config(&fs, "https://api.freezeframe-test.invalid");
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_failed_before_freezing(&report, "cannot tell which Droplet this is");
    assert!(report["error"].as_str().unwrap().contains("dns"), "{report:#}");
}

/// Starts a snapshot of `fs` with a MariaDB quiescer for `server`, held inside the frozen window
/// for `hold_ms` (the local-image copy failpoint); returns once the agent says it is frozen.
fn frozen_holding_mariadb_lock(
    fs: &ScratchFs,
    server: &MariaDb,
    hold_ms: u32,
) -> (std::process::Child, Instant) {
    let config = local_image_config(
        fs,
        &format!(
            "\n[[quiescer]]\nkind = \"mariadb\"\nsocket = {:?}\n",
            server.socket.display().to_string()
        ),
    );
    let mut cmd = Command::new(agent_bin());
    cmd.env("FAILPOINTS", format!("local-image-copy=sleep({hold_ms})"))
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"]);
    spawn_until_frozen(cmd, fs.dir.path())
}

#[test]
fn a_sigkilled_agent_leaves_no_mariadb_lock_behind() {
    let fs = scratch_fs_sized(Fs::Ext4, 160);
    let server = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    server.sql("CREATE DATABASE app; CREATE TABLE app.rows (n BIGINT PRIMARY KEY) ENGINE=InnoDB");
    // Frozen, with FLUSH TABLES WITH READ LOCK held by the agent's session.
    let (mut agent, _) = frozen_holding_mariadb_lock(&fs, &server, 60_000);
    agent.kill().unwrap();
    agent.wait().unwrap();
    // The session's client read its statements from the agent: at the agent's death it ends,
    // and the lock with it. A write goes through at once (the guard thawed the filesystem): on a
    // loaded machine within a bound only a leaked lock can reach (and which ends its wait).
    let started = Instant::now();
    server.sql("SET SESSION lock_wait_timeout = 30; INSERT INTO app.rows VALUES (1)");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a writer waited behind a leaked lock"
    );
    assert_eq!(server.sql("SELECT COUNT(*) FROM app.rows"), "1");
}

/// A hook that stops PostgreSQL in its `freeze` (hooks run before the database quiescers), so
/// the database is down between the preflight that found it and its own prepare.
fn hook_stopping_postgres(fs: &ScratchFs, server: &PgServer, log: &Path) {
    let hooks = fs.dir.path().join("etc/hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("10-stop-db");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh
echo \"$1\" >> {log}
[ \"$1\" = freeze ] || exit 0
             runuser -u postgres -- {pg_ctl} -D {data} -m immediate -w stop >/dev/null
",
            log = log.display(),
            pg_ctl = pg_bin("pg_ctl").display(),
            data = server.data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_database_down_at_its_prepare_aborts_or_degrades_and_everything_prepared_resumes() {
    let fs = scratch_fs(Fs::Ext4);
    let (data, sockets) = (fs.path("pg/data"), fs.dir.path().join("pg-run"));
    let server = PgServer::start(&data, &sockets, true);
    let log = fs.dir.path().join("hook.log");
    hook_stopping_postgres(&fs, &server, &log);
    let quiescer = format!(
        "\n[[quiescer]]\nkind = \"postgresql\"\nsocket_dir = {:?}\n",
        sockets.display().to_string()
    );

    // Default policy: abort before freezing; the hook that prepared gets its `thaw`.
    let report = snapshot_json(&local_image_config(&fs, &quiescer));
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["failed_phase"], "quiesce", "{report:#}");
    assert!(
        report["error"].as_str().unwrap().contains("postgresql"),
        "{report:#}"
    );
    assert!(report["filesystems"]["frozen"].as_array().unwrap().is_empty());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "freeze\nthaw\n");
    assert_eq!(report["quiescers"][0]["resumed"], true, "{report:#}");

    // `continue`: the snapshot is taken, said to be only filesystem-consistent, and why.
    let server = PgServer::restart(&data, &sockets);
    std::fs::remove_file(&log).unwrap();
    // (The configuration ends in its [quiesce] section.)
    let config = local_image_config(&fs, &format!("on_quiesce_failure = \"continue\"\n{quiescer}"));
    let report = snapshot_json(&config);
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "filesystem", "{report:#}");
    assert!(
        report["warnings"].to_string().contains("postgresql"),
        "{report:#}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "freeze\nthaw\n");
    drop(server);
}

#[test]
fn mariadb_dying_while_its_lock_is_held_fails_the_resume_and_still_thaws() {
    let fs = scratch_fs_sized(Fs::Ext4, 160);
    let mut server = MariaDb::start(&fs.path("mysql/data"), &fs.dir.path().join("mysql-run"), true);
    let (agent, frozen_at) = frozen_holding_mariadb_lock(&fs, &server, 2000);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let out = agent.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    // The snapshot was taken while the lock held; the lost session is what the run reports.
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["failed_phase"], "resume", "{report:#}");
    assert!(
        report["error"].as_str().unwrap().contains("mariadb"),
        "{report:#}"
    );
    assert!(report["action_id"].is_string(), "{report:#}");
    let probe = WriteProbe::start(&fs.mountpoint);
    assert_writable_within(&probe, frozen_at, Duration::from_secs(20), "thawed");
}
