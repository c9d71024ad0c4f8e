//! PostgreSQL: a `CHECKPOINT` before the freeze (unless `checkpoint = false`), so recovery from
//! the snapshot replays little WAL. Consistency itself comes from freezing, in one window, every filesystem that holds the
//! data directory, the WAL and the tablespaces; preflight refuses a layout where one of them
//! would not be frozen. Nothing is held across the freeze.
//!
//! Zero configuration on Debian and Ubuntu: `psql` runs as the `postgres` OS user through
//! `runuser`, so the stock `peer` authentication lets it in without a password.

use super::require_frozen;
use crate::transaction::ports::{QuiesceError, Quiescer, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) struct Postgres {
    socket_dir: PathBuf,
    port: u16,
    os_user: String,
    checkpoint: bool,
    timeout: Duration,
    name: String,
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
        }
    }

    /// Runs one statement through psql as the database's OS user; returns its rows, one per line.
    async fn sql(&self, statement: &str) -> Result<Vec<String>, QuiesceError> {
        let out = tokio::process::Command::new("runuser")
            .args([
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
            ])
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-d", "postgres", "-c", statement])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| QuiesceError(format!("cannot run psql (is postgresql-client installed?): {e}")))?;
        if !out.status.success() {
            return Err(QuiesceError(format!(
                "PostgreSQL at {} port {} refused `{statement}`: {}",
                self.socket_dir.display(),
                self.port,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
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

    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        let data = self.sql("SHOW data_directory").await?;
        let data = PathBuf::from(
            data.first()
                .ok_or_else(|| QuiesceError("no data_directory".into()))?,
        );
        require_frozen("PostgreSQL's data directory", &data, targets)?;
        // pg_wal may be a link to another filesystem.
        let wal = std::fs::canonicalize(data.join("pg_wal"))
            .map_err(|e| QuiesceError(format!("cannot resolve {}/pg_wal: {e}", data.display())))?;
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
        if !self.checkpoint {
            return Ok(());
        }
        self.sql("CHECKPOINT").await.map(drop)
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        Ok(())
    }
}
