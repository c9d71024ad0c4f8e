//! MariaDB and MySQL: `FLUSH TABLES WITH READ LOCK` held on a live session across the freeze and
//! released after the thaw, with `lock_wait_timeout` bounding the wait for the lock. If the lock
//! is still pending when the run gives up, the pending query is killed from a second session, so
//! no client stays blocked behind it. The binary log position at the lock is recorded.
//!
//! Zero configuration on Debian and Ubuntu: the `mariadb` client connects as root over the
//! server's socket, which `unix_socket` authentication admits without a password. The session
//! is a client process started before the freeze; during the window it is only waited on.

use super::{require_frozen, QuiesceError, Quiescer};
use crate::freeze::plan::Target;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// Marks the end of each batch of statements in the session's output.
const DONE: &str = "freezeframe-done";

struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    stderr: Option<ChildStderr>,
    connection_id: String,
}

pub struct Mysql {
    socket: PathBuf,
    lock_wait_timeout: Duration,
    timeout: Duration,
    name: String,
    session: Option<Session>,
    locked: bool,
    binlog: Option<String>,
}

impl Mysql {
    pub fn new(socket: PathBuf, lock_wait_timeout: Duration, timeout: Duration) -> Self {
        let name = format!("mariadb ({})", socket.display());
        Mysql {
            socket,
            lock_wait_timeout,
            timeout,
            name,
            session: None,
            locked: false,
            binlog: None,
        }
    }

    fn client(&self) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.arg(format!("--socket={}", self.socket.display())).args([
            "--user=root",
            "--batch",
            "--skip-column-names",
            "--unbuffered",
        ]);
        cmd
    }

    /// One statement on its own connection; its output lines.
    async fn query(&self, statement: &str) -> Result<Vec<String>, QuiesceError> {
        let out = self
            .client()
            .args(["-e", statement])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| QuiesceError(format!("cannot run the mariadb client (is it installed?): {e}")))?;
        if !out.status.success() {
            return Err(QuiesceError(format!(
                "the server at {} refused `{statement}`: {}",
                self.socket.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect())
    }
}

impl Session {
    /// Sends statements, then reads their output up to the end marker.
    async fn run(&mut self, statements: &str) -> Result<Vec<String>, QuiesceError> {
        let batch = format!("{statements}\nSELECT '{DONE}';\n");
        self.stdin
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| QuiesceError(format!("the lock session ended: {e}")))?;
        let mut lines = Vec::new();
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) if line == DONE => return Ok(lines),
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(_) => {
                    // The client stops at the first error; what it said is on its stderr.
                    let mut said = String::new();
                    if let Some(mut stderr) = self.stderr.take() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut said))
                                .await;
                    }
                    let said = said
                        .lines()
                        .filter(|l| l.starts_with("ERROR"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(QuiesceError(format!(
                        "the session ended{}; any lock it held is released",
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(": {said}")
                        }
                    )));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Quiescer for Mysql {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.timeout
    }

    fn details(&self) -> Option<String> {
        self.binlog.as_ref().map(|b| format!("binary log position {b}"))
    }

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        let rows = self.query("SELECT @@datadir").await?;
        let datadir = PathBuf::from(
            rows.first()
                .ok_or_else(|| QuiesceError("no @@datadir".into()))?
                .trim(),
        );
        require_frozen("MariaDB's data directory", &datadir, targets)
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        self.locked = false;
        self.binlog = None;
        let mut child = self
            .client()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| QuiesceError(format!("cannot run the mariadb client (is it installed?): {e}")))?;
        let child_stderr = child.stderr.take();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(QuiesceError("the mariadb client has no pipes".into()));
        };
        let mut session = Session {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stderr: child_stderr,
            connection_id: String::new(),
        };
        let id = session.run("SELECT CONNECTION_ID();").await?;
        session.connection_id = id.first().cloned().unwrap_or_default();
        // From here resume() must release, or kill, whatever this session holds or waits for.
        self.session = Some(session);
        let session = self.session.as_mut().expect("just set");
        session
            .run(&format!(
                "SET SESSION lock_wait_timeout = {};\nFLUSH TABLES WITH READ LOCK;",
                self.lock_wait_timeout.as_secs().max(1)
            ))
            .await
            .map_err(|e| QuiesceError(format!("FLUSH TABLES WITH READ LOCK did not complete: {e}")))?;
        self.locked = true;
        let status = session.run("SHOW MASTER STATUS;").await?;
        self.binlog = status.first().map(|row| {
            let mut cols = row.split('\t');
            format!("{}:{}", cols.next().unwrap_or(""), cols.next().unwrap_or(""))
        });
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        let Some(mut session) = self.session.take() else {
            return Ok(());
        };
        let result = if self.locked {
            session.run("UNLOCK TABLES;").await.map(drop)
        } else {
            // The lock may still be pending: kill that query so no client queues behind it.
            let id = session.connection_id.clone();
            if id.is_empty() {
                Ok(())
            } else {
                match self.query(&format!("KILL QUERY {id}")).await {
                    // The session is gone already, and whatever it waited for with it.
                    Err(e) if e.0.contains("Unknown thread id") => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        self.locked = false;
        drop(session.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), session.child.wait()).await;
        let _ = session.child.start_kill();
        result
    }
}
