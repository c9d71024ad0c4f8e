//! Database servers from Debian's packages, started by the tests with their data where the
//! test says (a loop filesystem), and the steps shared by the tests that snapshot them: a
//! snapshot under load, and a restore from the captured image.

use freezeframe_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A redis-server started for a test; stopped on drop.
pub(crate) struct RedisServer {
    pub(crate) socket: PathBuf,
    pub(crate) pidfile: PathBuf,
}

impl RedisServer {
    /// The server's PID, from its pidfile.
    pub(crate) fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub(crate) fn start(data: &Path, run_dir: &Path) -> RedisServer {
        RedisServer::start_with(data, run_dir, "yes")
    }

    /// A server without AOF, which loads the RDB file in `data`.
    pub(crate) fn start_saved(data: &Path, run_dir: &Path) -> RedisServer {
        RedisServer::start_with(data, run_dir, "no")
    }

    fn start_with(data: &Path, run_dir: &Path, appendonly: &str) -> RedisServer {
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
                appendonly,
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

impl RedisServer {
    /// Checks that the list `rows` holds at least the first `acked` pushes.
    pub(crate) fn assert_has_rows(&self, acked: u64) {
        let mut conn = BufReader::new(UnixStream::connect(&self.socket).unwrap());
        let len = redis(&mut conn, &["LLEN", "rows"]);
        let len: u64 = len
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("LLEN answered {len}"));
        assert!(
            len >= acked,
            "{len} Redis rows in the image, {acked} acknowledged before the freeze"
        );
        let last = redis(&mut conn, &["LINDEX", "rows", &(acked - 1).to_string()]);
        assert_eq!(
            last,
            format!("${}", acked.to_string().len()),
            "Redis row {acked} is there"
        );
    }
}

/// One RESP command on a fresh or given connection; the reply's first line.
pub(crate) fn redis(conn: &mut BufReader<UnixStream>, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(out.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// A client writing rows 1, 2, 3, … one at a time, counting those the server acknowledged.
/// Every write must succeed: a quiescer may delay writers, never fail them.
pub(crate) struct RowWriter {
    pub(crate) acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RowWriter {
    /// Starts writing with `write(n)`, and returns once `warm_up` rows were acknowledged.
    pub(crate) fn start(
        what: &str,
        warm_up: u64,
        mut write: impl FnMut(u64) -> Result<(), String> + Send + 'static,
    ) -> RowWriter {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, what_) = (acked.clone(), stop.clone(), what.to_string());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                if let Err(e) = write(n) {
                    panic!("{what_}: write {n} failed: {e}");
                }
                a.store(n, Ordering::SeqCst);
            }
        });
        let writer = RowWriter {
            acked,
            stop,
            thread: Some(thread),
        };
        writer.wait_for(warm_up);
        writer
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Waits until `n` rows were acknowledged.
    pub(crate) fn wait_for(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.acked() < n {
            let failed = self.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(
                !failed && std::time::Instant::now() < deadline,
                "the writer stalled at {}",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops writing; panics if any write failed.
    pub(crate) fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("every write succeeded");
        self.acked()
    }
}

impl Drop for RowWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Pushes 1, 2, 3, … onto the list `rows`.
pub(crate) fn redis_pusher(socket: &Path) -> RowWriter {
    let mut conn = BufReader::new(UnixStream::connect(socket).unwrap());
    RowWriter::start("redis RPUSH", 100, move |n| {
        let reply = redis(&mut conn, &["RPUSH", "rows", &n.to_string()]);
        reply
            .starts_with(':')
            .then_some(())
            .ok_or(format!("RPUSH answered {reply}"))
    })
}

/// Inserts 1, 2, 3, … into `rows`, each INSERT committing on its own.
pub(crate) fn pg_inserter(sockets: &Path) -> RowWriter {
    let sockets = sockets.to_path_buf();
    RowWriter::start("PostgreSQL INSERT", 20, move |n| pg_insert(&sockets, n))
}

/// Inserts row `n` into `rows` of the server on `sockets`, committed on its own.
pub(crate) fn pg_insert(sockets: &Path, n: u64) -> Result<(), String> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", "psql", "-X", "-q", "-h"])
        .arg(sockets)
        .args([
            "-p",
            "5432",
            "-d",
            "postgres",
            "-c",
            &format!("INSERT INTO rows VALUES ({n})"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    succeeded(&out)
}

/// Ok if a database client succeeded, else what it said on stderr.
fn succeeded(out: &std::process::Output) -> Result<(), String> {
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Inserts 1, 2, 3, … into `app.rows` (InnoDB), each INSERT committing on its own.
pub(crate) fn mariadb_inserter(socket: &Path) -> RowWriter {
    let socket = socket.to_path_buf();
    RowWriter::start("MariaDB INSERT", 20, move |n| {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", socket.display()))
            .args(["--user=root", "-e", &format!("INSERT INTO app.rows VALUES ({n})")])
            .output()
            .map_err(|e| e.to_string())?;
        succeeded(&out)
    })
}

/// `freezeframe-agent snapshot --json` with `config`; its report.
pub(crate) fn snapshot_json(config: &Path) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// `freezeframe-agent snapshot --json --name NAME` with `config`.
pub(crate) fn agent_snapshot(config: &Path, name: &str) -> Command {
    let mut cmd = Command::new(agent_bin());
    cmd.arg("--config")
        .arg(config)
        .args(["snapshot", "--json", "--name", name]);
    cmd
}

/// Runs a snapshot command while `writers` write, calling `while_frozen` once the agent said it
/// is frozen; checks it succeeded application-consistent. Returns the report and each writer's
/// count when the agent was frozen: every one of those writes must be in the image.
pub(crate) fn snapshot_under_load(
    fs: &ScratchFs,
    snapshot: Command,
    writers: &[&RowWriter],
    while_frozen: impl FnOnce(),
) -> (serde_json::Value, Vec<u64>) {
    let (child, _) = spawn_until_frozen(snapshot, fs.dir.path());
    let acked_at_freeze = writers.iter().map(|w| w.acked()).collect();
    while_frozen();
    let out = child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["consistency"], "application", "{report:#}");
    (report, acked_at_freeze)
}

/// The image file of local snapshot `name`.
pub(crate) fn image_of(fs: &ScratchFs, name: &str) -> PathBuf {
    let dir = fs.dir.path().join("images").join(name);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    dir.join(manifest["images"][0]["file"].as_str().unwrap())
}

/// The local image of snapshot `name`, checked clean and mounted from a copy.
pub(crate) fn restore(fs: &ScratchFs, name: &str) -> LoopFs {
    let image = image_of(fs, name);
    assert_clean(Fs::Ext4, &image);
    loop_fs_from_image(&image, &fs.dir.path().join("restored"))
}

/// Mounts a copy of an image read-write (recovery may write), on its own loop device.
pub(crate) fn loop_fs_from_image(image: &Path, mountpoint: &Path) -> LoopFs {
    let copy = image.with_extension("restored.img");
    run(
        "cp",
        &["--sparse=always", image.to_str().unwrap(), copy.to_str().unwrap()],
    );
    LoopFs::attach(Fs::Ext4, copy, mountpoint).expect("mount the restored copy")
}

/// A MariaDB server started for a test, root admitted over its socket; stopped on drop.
pub(crate) struct MariaDb {
    pub(crate) socket: PathBuf,
    pub(crate) pidfile: PathBuf,
    pub(crate) child: std::process::Child,
}

impl MariaDb {
    pub(crate) fn start(data: &Path, run_dir: &Path, install: bool) -> MariaDb {
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
                    // Its own temporary files: tests install servers in parallel.
                    &format!("--tmpdir={}", run_dir.display()),
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
            .arg(format!("--tmpdir={}", run_dir.display()))
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

    pub(crate) fn try_sql(&self, statement: &str) -> Option<String> {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", statement])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Checks that `app.rows` holds every row numbered up to `acked`.
    pub(crate) fn assert_has_rows(&self, acked: u64) {
        let counted = self.sql(&format!("SELECT COUNT(*) FROM app.rows WHERE n <= {acked}"));
        assert_counted("MariaDB", &counted, acked);
    }

    pub(crate) fn sql(&self, statement: &str) -> String {
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

/// `freezeframe-agent verify --image IMAGE --json`: its exit code and findings.
pub(crate) fn verify(image: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(agent_bin())
        .args(["verify", "--json", "--image"])
        .arg(image)
        .output()
        .unwrap();
    let found = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), found)
}

/// Verifies the image of local snapshot `name`, expecting it verified with one database of
/// `kind`; that database's findings.
pub(crate) fn verified_database(fs: &ScratchFs, name: &str, kind: &str) -> serde_json::Value {
    let (code, found) = verify(&image_of(fs, name));
    assert_eq!(code, 0, "{found:#}");
    let databases = found["databases"].as_array().unwrap();
    assert_eq!(databases.len(), 1, "{found:#}");
    assert_eq!(databases[0]["kind"], kind, "{found:#}");
    assert_eq!(databases[0]["ok"], true, "{found:#}");
    assert!(databases[0]["recovery_seconds"].as_f64().is_some(), "{found:#}");
    databases[0].clone()
}

/// The rows `verify` counted in `table` of a database it checked.
pub(crate) fn rows_in(database: &serde_json::Value, table: &str) -> u64 {
    database["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table}: {database:#}"))["rows"]
        .as_u64()
        .unwrap()
}
