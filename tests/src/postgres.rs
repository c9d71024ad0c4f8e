//! PostgreSQL from Debian's packages, started by a test as the `postgres` OS user on a data
//! directory the test names (a loop filesystem, or one restored from a captured image).

use crate::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Checks that a `SELECT count(*)` of the rows numbered up to `acked` counted all of them.
pub fn assert_counted(what: &str, counted: &str, acked: u64) {
    assert_eq!(
        counted,
        acked.to_string(),
        "every {what} row committed before the freeze is there"
    );
}

/// The newest PostgreSQL server binaries Debian installed.
pub fn pg_bin(name: &str) -> PathBuf {
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
pub struct PgServer {
    pub data: PathBuf,
    pub sockets: PathBuf,
}

/// A new cluster at `data` (its folder `postgres`'s), made by initdb as `postgres`, trusting
/// local connections.
pub fn initdb(data: &Path) {
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

impl PgServer {
    pub fn start(data: &Path, sockets: &Path, init: bool) -> PgServer {
        for dir in [data.parent().unwrap(), sockets] {
            std::fs::create_dir_all(dir).unwrap();
            run("chown", &["postgres:postgres", dir.to_str().unwrap()]);
        }
        if init {
            initdb(data);
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

    /// Starts a server on a data directory restored from an image. The image holds the
    /// running server's postmaster.pid; a restored machine has no such process, but here its
    /// PID may still exist (the server this test stopped), so the file goes first.
    pub fn restart(data: &Path, sockets: &Path) -> PgServer {
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        PgServer::start(data, sockets, false)
    }

    /// Checks that `rows` holds every row numbered up to `acked`.
    pub fn assert_has_rows(&self, acked: u64) {
        let counted = self.sql(&format!("SELECT count(*) FROM rows WHERE n <= {acked}"));
        assert_counted("PostgreSQL", &counted, acked);
    }

    /// The postmaster's PID, from postmaster.pid.
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }

    pub fn sql(&self, statement: &str) -> String {
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
