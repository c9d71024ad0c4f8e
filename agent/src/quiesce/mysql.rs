//! MariaDB and MySQL: `FLUSH TABLES WITH READ LOCK` (on MySQL 8, `LOCK INSTANCE FOR BACKUP`,
//! which leaves InnoDB writes flowing and relies on its crash recovery) held on a live session
//! across the freeze and released after the thaw, with `lock_wait_timeout` bounding the wait. If the lock
//! is still pending when the run gives up, the pending query is killed from a second session, so
//! no client stays blocked behind it. The binary log position at the lock is recorded.
//!
//! Zero configuration on Debian and Ubuntu: the `mariadb` client connects as root over the
//! server's socket, which `unix_socket` authentication admits without a password. Another user
//! and a password file can be configured; the password reaches the client in `MYSQL_PWD`, which
//! only root and the client itself can read. The session is a client process started before the
//! freeze; during the window it is only waited on. Clients run outside the agent's sandbox,
//! through systemd where it runs them ([`super::client`]), so a socket in the host's `/tmp` is
//! reached.

use super::client::{self, Clients, Program};
use super::require_frozen;
use crate::config::MariadbLogin;
use crate::secret::{read_private_file, Secret};
use crate::transaction::ports::{DatabaseEndpoint, QuiesceError, Quiescer, Target};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

/// Marks the end of each batch of statements in the session's output.
const DONE: &str = "freezeframe-done";

/// How long resume waits for the session's client to exit once its stdin is closed.
const END_WAIT: Duration = Duration::from_secs(10);

struct Session {
    process: client::Process,
    stdin: pipe::Sender,
    stdout: tokio::io::Lines<BufReader<pipe::Receiver>>,
    stderr: Option<pipe::Receiver>,
    connection_id: String,
}

/// How the server is locked for the snapshot, by what it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// `FLUSH TABLES WITH READ LOCK`: MariaDB and MySQL before 8.0.
    GlobalReadLock,
    /// `LOCK INSTANCE FOR BACKUP`: MySQL 8.0 and later.
    BackupLock,
}

impl LockKind {
    /// From `SELECT VERSION()`, such as `10.11.6-MariaDB-0+deb12u1` or `8.0.36`.
    pub(crate) fn for_version(version: &str) -> LockKind {
        let major: u32 = version
            .split(['.', '-'])
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if version.contains("MariaDB") || major < 8 {
            LockKind::GlobalReadLock
        } else {
            LockKind::BackupLock
        }
    }

    fn lock(self) -> &'static str {
        match self {
            LockKind::GlobalReadLock => "FLUSH TABLES WITH READ LOCK",
            LockKind::BackupLock => "LOCK INSTANCE FOR BACKUP",
        }
    }

    fn unlock(self) -> &'static str {
        match self {
            LockKind::GlobalReadLock => "UNLOCK TABLES",
            LockKind::BackupLock => "UNLOCK INSTANCE",
        }
    }
}

pub(crate) struct Mysql {
    socket: PathBuf,
    login: MariadbLogin,
    password: Option<Secret>,
    lock_kind: LockKind,
    lock_wait_timeout: Duration,
    timeout: Duration,
    /// The longest the filesystems stay frozen (`freeze.max_freeze`).
    max_freeze: Duration,
    name: String,
    clients: Clients,
    session: Option<Session>,
    locked: bool,
    binlog: Option<String>,
}

impl Mysql {
    pub(crate) fn new(
        socket: PathBuf,
        login: MariadbLogin,
        lock_wait_timeout: Duration,
        timeout: Duration,
    ) -> Self {
        let name = format!("mariadb ({})", socket.display());
        Mysql {
            socket,
            login,
            password: None,
            lock_kind: LockKind::GlobalReadLock,
            lock_wait_timeout,
            timeout,
            max_freeze: crate::config::DEFAULT_MAX_FREEZE,
            name,
            clients: Clients::direct(),
            session: None,
            locked: false,
            binlog: None,
        }
    }

    /// Runs its clients through `clients` (outside the agent's sandbox, where systemd can).
    pub(crate) fn run_through(mut self, clients: Clients) -> Self {
        self.clients = clients;
        self
    }

    /// The freeze lasts at most `max_freeze`, which bounds how long the lock session lives.
    pub(crate) fn frozen_at_most(mut self, max_freeze: Duration) -> Self {
        self.max_freeze = max_freeze;
        self
    }

    /// The longest a lock session can be needed: its prepare, the freeze, its resume. Past it,
    /// systemd stops the session's unit, so a lock whose agent is gone or hung never stays.
    fn session_lifetime(&self) -> Duration {
        self.timeout + self.max_freeze + self.timeout + END_WAIT
    }

    /// The client with the connection's arguments, then `extra`.
    fn client(&self, extra: &[&str]) -> Program {
        let mut argv = vec![
            client_program().to_string(),
            format!("--socket={}", self.socket.display()),
            format!("--user={}", self.login.user),
            "--batch".into(),
            "--skip-column-names".into(),
            "--unbuffered".into(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        Program {
            argv,
            password: self.password.clone().map(|p| ("MYSQL_PWD", p)),
        }
    }

    /// One statement on its own connection; its output lines.
    async fn query(&self, statement: &str) -> Result<Vec<String>, QuiesceError> {
        let out = self
            .clients
            .output(&self.client(&["-e", statement]), self.timeout)
            .await
            .map_err(|e| QuiesceError::with_source("cannot run the mariadb client (is it installed?)", e))?;
        if !out.success {
            return Err(QuiesceError::new(format!(
                "the server at {} refused `{statement}`: {}",
                self.socket.display(),
                out.stderr.trim()
            )));
        }
        Ok(out.stdout.lines().map(String::from).collect())
    }
}

impl Session {
    /// Sends statements, then reads their output up to the end marker.
    async fn run(&mut self, statements: &str) -> Result<Vec<String>, QuiesceError> {
        let batch = format!("{statements}\nSELECT '{DONE}';\n");
        self.stdin
            .write_all(batch.as_bytes())
            .await
            .map_err(|e| QuiesceError::with_source("the lock session ended", e))?;
        let mut lines = Vec::new();
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) if line == DONE => return Ok(lines),
                Ok(Some(line)) => lines.push(line),
                Ok(None) | Err(_) => {
                    // The client stops at the first error; what it said is on its stderr.
                    let mut said = Vec::new();
                    if let Some(mut stderr) = self.stderr.take() {
                        let read = client::read_into(&mut stderr, &mut said);
                        let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
                    }
                    let said = String::from_utf8_lossy(&said);
                    let said = said
                        .lines()
                        .filter(|l| l.starts_with("ERROR"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(QuiesceError::new(format!(
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

    fn endpoint(&self) -> Option<DatabaseEndpoint> {
        Some(DatabaseEndpoint::Mariadb {
            socket: self.socket.clone(),
            user: self.login.user.clone(),
            password_file: self.login.password_file.clone(),
        })
    }

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        if let Some(file) = &self.login.password_file {
            self.password = Some(
                read_private_file(file).map_err(|e| QuiesceError::with_source("the database password", e))?,
            );
        }
        let version = self.query("SELECT VERSION()").await?;
        self.lock_kind = LockKind::for_version(version.first().map(String::as_str).unwrap_or(""));
        let rows = self.query("SELECT @@datadir").await?;
        let datadir = PathBuf::from(
            rows.first()
                .ok_or_else(|| QuiesceError::new("no @@datadir"))?
                .trim(),
        );
        require_frozen("MariaDB's data directory", &datadir, targets)
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        self.locked = false;
        self.binlog = None;
        let started = self
            .clients
            .spawn(&self.client(&[]), self.timeout, self.session_lifetime())
            .await
            .map_err(|e| QuiesceError::with_source("cannot run the mariadb client (is it installed?)", e))?;
        let mut session = Session {
            process: started.process,
            stdin: started.stdin,
            stdout: BufReader::new(started.stdout).lines(),
            stderr: Some(started.stderr),
            connection_id: String::new(),
        };
        let id = session.run("SELECT CONNECTION_ID();").await?;
        session.connection_id = id.first().cloned().unwrap_or_default();
        // From here resume() must release, or kill, whatever this session holds or waits for.
        self.session = Some(session);
        let session = self.session.as_mut().expect("just set");
        let lock = self.lock_kind.lock();
        session
            .run(&format!(
                "SET SESSION lock_wait_timeout = {};\n{lock};",
                self.lock_wait_timeout.as_secs().max(1)
            ))
            .await
            .map_err(|e| QuiesceError::with_source(format!("{lock} did not complete"), e))?;
        self.locked = true;
        // MySQL 8.4 removed SHOW MASTER STATUS; MariaDB has no SHOW BINARY LOG STATUS.
        let status = match session.run("SHOW MASTER STATUS;").await {
            Ok(rows) => rows,
            Err(_) if self.lock_kind == LockKind::BackupLock => {
                session.run("SHOW BINARY LOG STATUS;").await.unwrap_or_default()
            }
            Err(e) => return Err(e),
        };
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
            session
                .run(&format!("{};", self.lock_kind.unlock()))
                .await
                .map(drop)
        } else {
            // The lock may still be pending: kill that query so no client queues behind it.
            let id = session.connection_id.clone();
            if id.is_empty() {
                Ok(())
            } else {
                match self.query(&format!("KILL QUERY {id}")).await {
                    // The session is gone already, and whatever it waited for with it.
                    Err(e) if e.message().contains("Unknown thread id") => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        self.locked = false;
        drop(session.stdin);
        session.process.end(END_WAIT).await;
        result
    }
}

/// `mariadb` where it exists (MariaDB's client), otherwise MySQL's `mysql`.
fn client_program() -> &'static str {
    let in_path = |name: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
            .unwrap_or(false)
    };
    if in_path("mariadb") || !in_path("mysql") {
        "mariadb"
    } else {
        "mysql"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_follows_the_server_version() {
        for (version, kind) in [
            ("10.11.6-MariaDB-0+deb12u1", LockKind::GlobalReadLock),
            ("11.4.2-MariaDB", LockKind::GlobalReadLock),
            ("5.7.44-log", LockKind::GlobalReadLock),
            ("8.0.36", LockKind::BackupLock),
            ("8.4.0-0ubuntu0.24.04.1", LockKind::BackupLock),
            ("", LockKind::GlobalReadLock),
        ] {
            assert_eq!(LockKind::for_version(version), kind, "{version}");
        }
        assert_eq!(LockKind::BackupLock.unlock(), "UNLOCK INSTANCE");
    }
}
