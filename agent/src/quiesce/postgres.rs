//! PostgreSQL: a `CHECKPOINT` before the freeze (unless `checkpoint = false`), so recovery from
//! the snapshot replays little WAL. Consistency itself comes from freezing, in one window, every filesystem that holds the
//! data directory, the WAL and the tablespaces; preflight refuses a layout where one of them
//! would not be frozen. Nothing is held across the freeze. Once prepared it records where its
//! WAL stood (`LogPosition`), which `verify` holds a restore's recovery to.
//!
//! Zero configuration on Debian and Ubuntu: `psql` runs as the `postgres` OS user through
//! `runuser`, so the stock `peer` authentication lets it in without a password. psql runs
//! outside the agent's sandbox, through systemd where it runs it ([`super::client`]), so a
//! socket directory in the host's `/tmp` is reached.

use super::client::{Clients, Program};
use super::require_frozen;
use crate::transaction::ports::{DatabaseEndpoint, LogPosition, QuiesceError, Quiescer, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) struct Postgres {
    socket_dir: PathBuf,
    port: u16,
    os_user: String,
    checkpoint: bool,
    timeout: Duration,
    name: String,
    clients: Clients,
    /// Its data directory, learnt in `check`.
    data_directory: Option<PathBuf>,
    /// Where its WAL stood once prepared.
    position: Option<LogPosition>,
    /// Why that could not be recorded.
    unrecorded: Option<String>,
}

impl Postgres {
    pub(crate) fn new(
        socket_dir: PathBuf,
        port: u16,
        os_user: String,
        checkpoint: bool,
        timeout: Duration,
    ) -> Self {
        let name = format!("postgresql ({}, port {port})", socket_dir.display());
        Postgres {
            socket_dir,
            port,
            os_user,
            checkpoint,
            timeout,
            name,
            clients: Clients::direct(),
            data_directory: None,
            position: None,
            unrecorded: None,
        }
    }

    /// Runs its psql through `clients` (outside the agent's sandbox, where systemd can).
    pub(crate) fn run_through(mut self, clients: Clients) -> Self {
        self.clients = clients;
        self
    }

    /// Runs one statement through psql as the database's OS user; returns its rows, one per line.
    async fn sql(&self, statement: &str) -> Result<Vec<String>, QuiesceError> {
        let argv = [
            "runuser",
            "-u",
            &self.os_user,
            "--",
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &self.socket_dir.display().to_string(),
            "-p",
            &self.port.to_string(),
            "-d",
            "postgres",
            "-c",
            statement,
        ];
        let program = Program {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            password: None,
        };
        let out =
            self.clients.output(&program, self.timeout).await.map_err(|e| {
                QuiesceError::with_source("cannot run psql (is postgresql-client installed?)", e)
            })?;
        if !out.success {
            return Err(QuiesceError::new(format!(
                "PostgreSQL at {} port {} refused `{statement}`: {}",
                self.socket_dir.display(),
                self.port,
                out.stderr.trim()
            )));
        }
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// The WAL's insert position, read inside a transaction that then writes a record (a
    /// transactional logical message, which decoders of other prefixes skip) and commits
    /// synchronously: a commit is flushed only when its transaction wrote WAL, and a flush
    /// covers every record before it, so every record before the position is durable before
    /// the freeze. None on a standby (it writes no WAL of its own).
    async fn wal_position(&self) -> Result<Option<LogPosition>, QuiesceError> {
        let rows = self
            .sql(
                "BEGIN; SET LOCAL synchronous_commit = on; \
                 SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
                 ELSE pg_current_wal_insert_lsn() || ' ' || \
                 pg_logical_emit_message(true, 'freezeframe', 'snapshot point') END; COMMIT",
            )
            .await?;
        let lsn = rows
            .iter()
            .find_map(|row| Some(row.split_once(' ')?.0.to_string()));
        Ok(lsn
            .zip(self.data_directory.clone())
            .map(|(lsn, data_directory)| LogPosition { data_directory, lsn }))
    }
}

#[async_trait::async_trait]
impl Quiescer for Postgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.timeout
    }

    fn log_position(&self) -> Option<LogPosition> {
        self.position.clone()
    }

    fn endpoint(&self) -> Option<DatabaseEndpoint> {
        Some(DatabaseEndpoint::Postgresql {
            socket_dir: self.socket_dir.clone(),
            port: self.port,
            os_user: self.os_user.clone(),
        })
    }

    fn details(&self) -> Option<String> {
        match (&self.position, &self.unrecorded) {
            (Some(p), _) => Some(format!("WAL at {}", p.lsn)),
            (None, Some(why)) => Some(format!(
                "WAL position not recorded, so verify cannot hold a restore to it: {why}"
            )),
            (None, None) => None,
        }
    }

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        let data = self.sql("SHOW data_directory").await?;
        let data = PathBuf::from(
            data.first()
                .ok_or_else(|| QuiesceError::new("no data_directory"))?,
        );
        self.data_directory = Some(data.clone());
        require_frozen("PostgreSQL's data directory", &data, targets)?;
        // pg_wal may be a link to another filesystem.
        let wal = std::fs::canonicalize(data.join("pg_wal"))
            .map_err(|e| QuiesceError::with_source(format!("cannot resolve {}/pg_wal", data.display()), e))?;
        require_frozen("PostgreSQL's WAL directory", &wal, targets)?;
        let spaces = self
            .sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")
            .await?;
        for space in spaces {
            require_frozen("the PostgreSQL tablespace", Path::new(&space), targets)?;
        }
        Ok(())
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        self.position = None;
        self.unrecorded = None;
        if self.checkpoint {
            self.sql("CHECKPOINT").await?;
        }
        // Not recording it (a role that may not emit WAL messages) costs only that check.
        match self.wal_position().await {
            Ok(position) => self.position = position,
            Err(e) => self.unrecorded = Some(crate::errors::error_chain(&e)),
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        Ok(())
    }
}
