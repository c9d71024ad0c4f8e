//! The databases in a restored image, found by what their data looks like (the image alone is
//! the evidence: no report or config of the machine it came from is needed), and what checking
//! each one found.

use super::inside::{Kind, Root};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A kind of database `verify` knows how to start and check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    /// A PostgreSQL data directory (`PG_VERSION`, `global/pg_control`).
    Postgresql,
    /// A MariaDB or MySQL data directory (`mysql/` and InnoDB's or Aria's files).
    Mariadb,
    /// A Redis RDB dump.
    Redis,
}

impl DatabaseKind {
    /// How people write its name.
    pub fn label(self) -> &'static str {
        match self {
            DatabaseKind::Postgresql => "PostgreSQL",
            DatabaseKind::Mariadb => "MariaDB",
            DatabaseKind::Redis => "Redis",
        }
    }
}

/// One table's rows, as counted on the restored database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// `database.schema.table` (PostgreSQL) or `database.table` (MariaDB).
    pub table: String,
    /// Its rows.
    pub rows: u64,
}

/// What one database in the image did when started from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseCheck {
    /// What it is.
    pub kind: DatabaseKind,
    /// Its data directory (or dump) in the image, from the image's root.
    pub path: PathBuf,
    /// It started, recovered and passed every check.
    pub ok: bool,
    /// Seconds from starting the server to its first accepted connection: the recovery a
    /// restore of this snapshot will wait for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_seconds: Option<f64>,
    /// Bytes of write-ahead log replayed at start (PostgreSQL's WAL, InnoDB's redo log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_bytes: Option<u64>,
    /// Every table's rows (PostgreSQL, MariaDB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
    /// Keys in every database (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// What was checked, one line each (`pg_amcheck: no corruption`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// What failed, one line each; empty when `ok`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl DatabaseCheck {
    pub(crate) fn new(kind: DatabaseKind, path: &Path) -> DatabaseCheck {
        DatabaseCheck {
            kind,
            path: path.to_path_buf(),
            ok: false,
            recovery_seconds: None,
            replayed_bytes: None,
            tables: Vec::new(),
            keys: None,
            checks: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Records a failed step; `ok` stays false.
    pub(crate) fn fail(&mut self, problem: impl std::fmt::Display) {
        self.problems.push(problem.to_string());
    }

    /// Settles `ok`: every step ran and none failed.
    pub(crate) fn finish(mut self) -> DatabaseCheck {
        self.ok = self.problems.is_empty();
        self
    }
}

/// How deep below the image's root data is looked for: `/var/lib/postgresql/15/main` is 5.
const SEARCH_DEPTH: usize = 6;

/// Every database's data in the image whose top is `root`, as paths from it; every path
/// resolved inside the image, never through a link (which points into the machine the image
/// came from, not into the tree being searched).
pub(crate) fn find(root: &Root) -> Vec<(DatabaseKind, PathBuf)> {
    let mut found = Vec::new();
    search(root, Path::new(""), SEARCH_DEPTH, &mut found);
    found
}

fn search(root: &Root, rel: &Path, depth: usize, found: &mut Vec<(DatabaseKind, PathBuf)>) {
    if let Some(kind) = data_directory_kind(root, rel) {
        found.push((kind, rel.to_path_buf()));
        return;
    }
    for (name, kind) in root.entries(rel) {
        if kind == Kind::Dir && depth > 0 && !SKIPPED.iter().any(|s| name == *s) {
            search(root, &rel.join(&name), depth - 1, found);
        } else if kind == Kind::File && is_rdb(root, &rel.join(&name)) {
            found.push((DatabaseKind::Redis, rel.join(&name)));
        }
    }
}

/// Folders that hold no database's data in any layout we know, and can be huge.
const SKIPPED: &[&str] = &["proc", "sys", "dev", "usr", "lost+found", "snap", "boot"];

fn data_directory_kind(root: &Root, dir: &Path) -> Option<DatabaseKind> {
    let is = |name: &str, kind| root.kind(&dir.join(name)) == Some(kind);
    if is("PG_VERSION", Kind::File) && is("global/pg_control", Kind::File) {
        Some(DatabaseKind::Postgresql)
    } else if is("mysql", Kind::Dir)
        && ["ibdata1", "ib_logfile0", "aria_log_control"]
            .iter()
            .any(|f| is(f, Kind::File))
    {
        Some(DatabaseKind::Mariadb)
    } else {
        None
    }
}

/// An RDB dump; not the base of an append-only file (`appendonly.aof.1.base.rdb`), which is
/// only part of the AOF that a server with `appendonly yes` restores from.
fn is_rdb(root: &Root, path: &Path) -> bool {
    use std::io::Read;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if !name.ends_with(".rdb") || name.contains(".aof.") {
        return false;
    }
    let mut magic = [0u8; 5];
    root.resolve(path, libc::O_RDONLY | libc::O_NONBLOCK)
        .map(std::fs::File::from)
        .is_ok_and(|mut f| f.metadata().is_ok_and(|m| m.is_file()) && f.read_exact(&mut magic).is_ok())
        && &magic == b"REDIS"
}
