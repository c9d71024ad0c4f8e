//! Database quiescers against real servers from Debian's packages, with their data on a
//! loop filesystem, under a write load: the captured image starts a fresh server that has
//! every write acknowledged before the snapshot request.

use freezeframe_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A redis-server started for a test; stopped on drop.
struct RedisServer {
    socket: PathBuf,
    pidfile: PathBuf,
}

impl RedisServer {
    fn start(data: &Path, run_dir: &Path) -> RedisServer {
        std::fs::create_dir_all(data).unwrap();
        std::fs::create_dir_all(run_dir).unwrap();
        let socket = run_dir.join("redis.sock");
        let pidfile = run_dir.join("redis.pid");
        run(
            "redis-server",
            &[
                "--port",
                "0",
                "--unixsocket",
                socket.to_str().unwrap(),
                "--dir",
                data.to_str().unwrap(),
                "--daemonize",
                "yes",
                "--pidfile",
                pidfile.to_str().unwrap(),
                "--logfile",
                run_dir.join("redis.log").to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
        );
        let server = RedisServer { socket, pidfile };
        // Ready once it answers PING (not -LOADING, while it reads its files).
        for _ in 0..200 {
            if let Ok(conn) = UnixStream::connect(&server.socket) {
                if redis(&mut BufReader::new(conn), &["PING"]) == "+PONG" {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server did not start; see {}",
            run_dir.join("redis.log").display()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
                for _ in 0..100 {
                    if nix::sys::signal::kill(pid, None).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// One RESP command on a fresh or given connection; the reply's first line.
fn redis(conn: &mut BufReader<UnixStream>, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(out.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// Pushes 1, 2, 3, … onto a list, counting the pushes Redis acknowledged.
fn start_pusher(socket: &Path) -> (Arc<AtomicU64>, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s) = (acked.clone(), stop.clone());
    let mut conn = BufReader::new(UnixStream::connect(socket).unwrap());
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(Ordering::SeqCst) {
            n += 1;
            let reply = redis(&mut conn, &["RPUSH", "rows", &n.to_string()]);
            assert!(reply.starts_with(':'), "RPUSH answered {reply}");
            a.store(n, Ordering::SeqCst);
        }
    });
    (acked, stop, thread)
}

#[test]
fn redis_under_writes_gives_an_image_with_every_acknowledged_push() {
    let fs = scratch_fs(Fs::Ext4);
    let run_dir = fs.dir.path().join("redis-run");
    let server = RedisServer::start(&fs.path("redis"), &run_dir);
    let config = quiescer_config(&fs, "redis", "socket", &server.socket);

    let (acked, stop, pusher) = start_pusher(&server.socket);
    while acked.load(Ordering::SeqCst) < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (report, acked_at_freeze) = snapshot_under_load(&fs, &config, "redis", &acked);
    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
    assert_eq!(report["quiescers"][0]["prepared"], true);
    assert!(report["quiescers"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis"));
    drop(server);

    // A fresh server on a copy of the captured image.
    let restored = restore(&fs, "redis");
    let server = RedisServer::start(&restored.path("redis"), &fs.dir.path().join("redis-run-2"));
    let mut conn = BufReader::new(UnixStream::connect(&server.socket).unwrap());
    let len = redis(&mut conn, &["LLEN", "rows"]);
    let len: u64 = len
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("LLEN answered {len}"));
    assert!(
        len >= acked_at_freeze,
        "{len} rows in the image, {acked_at_freeze} acknowledged before the freeze"
    );
    let last = redis(&mut conn, &["LINDEX", "rows", &(acked_at_freeze - 1).to_string()]);
    assert!(last.starts_with('$'), "row {acked_at_freeze} is there");
}

/// A local-image configuration freezing `fs`, with one `[[quiescer]]` of `kind` whose `key`
/// names `value` (a socket or socket folder).
fn quiescer_config(fs: &ScratchFs, kind: &str, key: &str, value: &Path) -> PathBuf {
    let config = fs.dir.path().join("etc/config.toml");
    write_config(
        &config,
        &[&fs.mountpoint],
        &fs.dir.path().join("run"),
        &fs.dir.path().join("images"),
        "20s",
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[quiescer]]\nkind = \"{kind}\"\n{key} = {:?}\n",
        value.display().to_string()
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// `freezeframe-agent snapshot --json` with `config`; its report.
fn snapshot_json(config: &Path) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Takes snapshot `name` with `config` while a writer counts its acknowledged writes in
/// `acked`; checks it succeeded application-consistent. Returns the report and the count when
/// the agent said it was frozen: every one of those writes must be in the image.
fn snapshot_under_load(
    fs: &ScratchFs,
    config: &Path,
    name: &str,
    acked: &AtomicU64,
) -> (serde_json::Value, u64) {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--config")
        .arg(config)
        .args(["snapshot", "--json", "--name", name]);
    let (child, _) = spawn_until_frozen(cmd, fs.dir.path());
    let acked_at_freeze = acked.load(Ordering::SeqCst);
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application");
    (report, acked_at_freeze)
}

/// The local image of snapshot `name`, checked clean and mounted from a copy.
fn restore(fs: &ScratchFs, name: &str) -> LoopFs {
    let dir = fs.dir.path().join("images").join(name);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let image = dir.join(manifest["images"][0]["file"].as_str().unwrap());
    assert_clean(Fs::Ext4, &image);
    loop_fs_from_image(&image, &fs.dir.path().join("restored"))
}

/// Mounts a copy of an image read-write (recovery may write), on its own loop device.
fn loop_fs_from_image(image: &Path, mountpoint: &Path) -> LoopFs {
    let copy = image.with_extension("restored.img");
    run(
        "cp",
        &["--sparse=always", image.to_str().unwrap(), copy.to_str().unwrap()],
    );
    std::fs::create_dir_all(mountpoint).unwrap();
    let device = run("losetup", &["--find", "--show", copy.to_str().unwrap()])
        .trim()
        .to_string();
    run("mount", &[&device, mountpoint.to_str().unwrap()]);
    LoopFs::adopt(Fs::Ext4, copy, device, mountpoint.to_path_buf())
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

/// The newest PostgreSQL server binaries Debian installed.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (.ci/run installs it)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

/// A PostgreSQL server started for a test as the `postgres` OS user; stopped on drop.
struct PgServer {
    data: PathBuf,
    sockets: PathBuf,
}

impl PgServer {
    fn start(data: &Path, sockets: &Path, init: bool) -> PgServer {
        for dir in [data.parent().unwrap(), sockets] {
            std::fs::create_dir_all(dir).unwrap();
            run("chown", &["postgres:postgres", dir.to_str().unwrap()]);
        }
        if init {
            run(
                "runuser",
                &[
                    "-u",
                    "postgres",
                    "--",
                    pg_bin("initdb").to_str().unwrap(),
                    "-A",
                    "trust",
                    "--no-sync",
                    "-D",
                    data.to_str().unwrap(),
                ],
            );
        }
        let options = format!("-p 5432 -k {} -c listen_addresses=''", sockets.display());
        let log = sockets.join("log");
        let started = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args([
                "-w",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "start",
            ])
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "PostgreSQL did not start on {}:\n{}",
            data.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PgServer {
            data: data.to_path_buf(),
            sockets: sockets.to_path_buf(),
        }
    }

    fn sql(&self, statement: &str) -> String {
        run(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                self.sockets.to_str().unwrap(),
                "-p",
                "5432",
                "-d",
                "postgres",
                "-c",
                statement,
            ],
        )
        .trim()
        .to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-m", "fast", "-w", "stop"])
            .output();
    }
}

#[test]
fn postgresql_under_writes_gives_an_image_with_every_committed_row() {
    let fs = scratch_fs(Fs::Ext4);
    let server = PgServer::start(&fs.path("pg/data"), &fs.dir.path().join("pg-run"), true);
    server.sql("CREATE TABLE rows (n bigint PRIMARY KEY)");
    let config = quiescer_config(&fs, "postgresql", "socket_dir", &server.sockets);

    // Each INSERT commits on its own; a row counts once psql returned.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s, sockets) = (acked.clone(), stop.clone(), server.sockets.clone());
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(Ordering::SeqCst) {
            n += 1;
            let ok = Command::new("runuser")
                .args(["-u", "postgres", "--", "psql", "-X", "-q", "-h"])
                .arg(&sockets)
                .args([
                    "-p",
                    "5432",
                    "-d",
                    "postgres",
                    "-c",
                    &format!("INSERT INTO rows VALUES ({n})"),
                ])
                .status()
                .is_ok_and(|st| st.success());
            assert!(ok, "INSERT {n} failed");
            a.store(n, Ordering::SeqCst);
        }
    });
    while acked.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (report, acked_at_freeze) = snapshot_under_load(&fs, &config, "pg", &acked);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(report["quiescers"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("postgresql"));
    drop(server);

    let restored = restore(&fs, "pg");
    // The image holds the running server's postmaster.pid; a restored machine has no such
    // process, but here its PID may still exist (as a zombie of this test), so remove the file.
    std::fs::remove_file(restored.path("pg/data/postmaster.pid")).unwrap();
    let server = PgServer::start(&restored.path("pg/data"), &fs.dir.path().join("pg-run-2"), false);
    let present = server.sql(&format!("SELECT count(*) FROM rows WHERE n <= {acked_at_freeze}"));
    assert_eq!(
        present,
        acked_at_freeze.to_string(),
        "every row committed before the freeze is there"
    );
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

/// A MariaDB server started for a test, root admitted over its socket; stopped on drop.
struct MariaDb {
    socket: PathBuf,
    pidfile: PathBuf,
    child: std::process::Child,
}

impl MariaDb {
    fn start(data: &Path, run_dir: &Path, install: bool) -> MariaDb {
        for dir in [data.parent().unwrap(), run_dir] {
            std::fs::create_dir_all(dir).unwrap();
            run("chown", &["mysql:mysql", dir.to_str().unwrap()]);
        }
        if install {
            run(
                "mariadb-install-db",
                &[
                    "--user=mysql",
                    &format!("--datadir={}", data.display()),
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    "--innodb-log-file-size=8M",
                ],
            );
        }
        let socket = run_dir.join("mysqld.sock");
        let pidfile = run_dir.join("mysqld.pid");
        let _ = std::fs::remove_file(&pidfile);
        let child = Command::new("mariadbd")
            .args([
                "--user=mysql",
                "--skip-networking",
                "--log-bin=mysql-bin",
                "--innodb-log-file-size=8M",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", pidfile.display()))
            .arg(format!("--log-error={}", run_dir.join("error.log").display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mariadbd");
        let server = MariaDb {
            socket,
            pidfile,
            child,
        };
        for _ in 0..300 {
            if server.try_sql("SELECT 1").is_some() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "mariadbd did not start: {}",
            std::fs::read_to_string(run_dir.join("error.log")).unwrap_or_default()
        );
    }

    fn try_sql(&self, statement: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", statement])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn sql(&self, statement: &str) -> String {
        self.try_sql(statement)
            .unwrap_or_else(|| panic!("`{statement}` failed"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pidfile);
    }
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

    // Each INSERT commits on its own; every one must succeed, the lock only delays them.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s, socket) = (acked.clone(), stop.clone(), server.socket.clone());
    let writer = std::thread::spawn(move || {
        let mut n = 0u64;
        while !s.load(Ordering::SeqCst) {
            n += 1;
            let out = Command::new("mariadb")
                .arg(format!("--socket={}", socket.display()))
                .args(["--user=root", "-e", &format!("INSERT INTO app.rows VALUES ({n})")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "INSERT {n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            a.store(n, Ordering::SeqCst);
        }
    });
    while acked.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (report, acked_at_freeze) = snapshot_under_load(&fs, &config, "maria", &acked);
    // The writer goes on after the thaw: the rows after the freeze arrive too.
    let resumed_from = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < resumed_from + 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("no INSERT failed");
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
    let present = server.sql(&format!(
        "SELECT COUNT(*) FROM app.rows WHERE n <= {acked_at_freeze}"
    ));
    assert_eq!(
        present,
        acked_at_freeze.to_string(),
        "every row committed before the freeze is there"
    );
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
