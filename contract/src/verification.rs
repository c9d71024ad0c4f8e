//! What `freezeframe-agent verify` finds, as records: on an image or a whole disk
//! (`ImageVerification`, `DiskVerification`, `Findings`), on a restored machine
//! (`MachineVerification`), and each database's check (`DatabaseCheck`). The agent writes them
//! as JSON (`verify --json`); the CLI's restore drill reads them back over ssh and decides on
//! them (`ProbeVerdict`), so they are the contract's, not the agent's.

use crate::Consistency;
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
    /// A check of the database of `kind` at `path`, not yet passed.
    pub fn new(kind: DatabaseKind, path: &Path) -> DatabaseCheck {
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
    pub fn fail(&mut self, problem: impl std::fmt::Display) {
        self.problems.push(problem.to_string());
    }

    /// Settles `ok`: every step ran and none failed.
    pub fn finish(mut self) -> DatabaseCheck {
        self.ok = self.problems.is_empty();
        self
    }
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionVerification {
    /// Its number in the table (1 for `p1`).
    pub number: u32,
    /// What blkid finds in it (empty: nothing it knows).
    pub fstype: String,
    /// What verifying it found; none for a partition without ext4, XFS or btrfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<ImageVerification>,
}

/// Everything `verify --image` found on a partitioned disk, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskVerification {
    /// The image or device checked.
    pub image: PathBuf,
    /// Its partition table, as blkid names it (`gpt`, `dos`).
    pub partition_table: String,
    /// Every partition, in order.
    pub partitions: Vec<PartitionVerification>,
    /// When the platform read the disk, by the markers and journals of its partitions.
    pub probe: ProbeVerdict,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check, each naming its partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// What checking an image or device found: a disk's partitions, or one filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Findings {
    /// A whole disk, through its partition table.
    Disk(DiskVerification),
    /// One filesystem.
    Filesystem(ImageVerification),
}

impl Findings {
    /// Every check passed.
    pub fn verified(&self) -> bool {
        match self {
            Findings::Disk(d) => d.verified,
            Findings::Filesystem(f) => f.verified,
        }
    }

    /// Why not, one line per failed check.
    pub fn reasons(&self) -> &[String] {
        match self {
            Findings::Disk(d) => &d.reasons,
            Findings::Filesystem(f) => &f.reasons,
        }
    }

    /// Every database found and checked.
    pub fn databases(&self) -> Vec<&DatabaseCheck> {
        match self {
            Findings::Disk(d) => d
                .partitions
                .iter()
                .filter_map(|p| p.found.as_ref())
                .flat_map(|f| &f.databases)
                .collect(),
            Findings::Filesystem(f) => f.databases.iter().collect(),
        }
    }
}

/// When the platform read the image, as its markers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeVerdict {
    /// `before` and not `after`: read while the filesystem was frozen.
    InsideWindow,
    /// `after` too: read after the thaw, so it may hold writes from after the snapshot point.
    AfterThaw,
    /// No marker (the probe was off, or this is not freezeframe's snapshot).
    NoMarkers,
}

/// The journal's state in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalState {
    /// Nothing to replay: what a freeze leaves.
    Clean,
    /// Transactions to replay: the filesystem was live, not frozen, when it was read.
    NeedsRecovery,
    /// The superblock says clean but the journal holds transactions: the superblock was read
    /// inside the window and the journal after the thaw (a read part-way through it). A boot
    /// discards those transactions, as this check does.
    Torn,
    /// The log cannot tell (XFS: a freeze covers its log but does not empty it).
    NotTold,
}

/// One mounted filesystem's markers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountedFilesystem {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its type.
    pub fstype: String,
    /// The markers found on it, as `snapshot.moment`.
    pub markers: Vec<String>,
    /// Its journal logged the `after` marker's creation (ext4): part of the disk was read
    /// after the thaw, even if the marker itself is not on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_logged: bool,
    /// The kernel's view of its health; none where the kernel keeps none (btrfs before Linux
    /// 5.14), or from an agent that did not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<FilesystemHealth>,
}

/// A mounted filesystem's health as the kernel records it: ext4's error count and first and
/// last error (`/sys/fs/ext4/<dev>/`), btrfs's device error counters
/// (`/sys/fs/btrfs/<fsid>/devinfo/<id>/error_stats`), XFS shut down (it answers EIO).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemHealth {
    /// Where the kernel's view was read.
    pub source: String,
    /// The errors the kernel counted (ext4's `errors_count`, btrfs's counters summed); none
    /// for XFS, which keeps no count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// What the kernel recorded, one line each; empty when it recorded nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl FilesystemHealth {
    /// The kernel recorded no error.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    /// In words, for the reports as text.
    pub fn words(health: Option<&FilesystemHealth>) -> String {
        match health {
            None => "the kernel keeps no record of its errors".into(),
            Some(h) if h.healthy() => "no errors recorded by the kernel".into(),
            Some(h) => format!("ERRORS: {}", h.problems.join("; ")),
        }
    }
}

/// A restored volume, checked as an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeVerification {
    /// Its name (the device is `scsi-0DO_Volume_<name>` under `digitalocean.volume_links`).
    pub name: String,
    /// What checking its device found: one filesystem, or a disk's partitions.
    pub found: Findings,
}

/// Everything `verify` found on a restored machine, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineVerification {
    /// When the platform read the machine's disk, by the markers on its filesystems.
    pub probe: ProbeVerdict,
    /// The consistency the snapshot was taken as, from its `before` marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Consistency>,
    /// The filesystems looked at.
    pub filesystems: Vec<MountedFilesystem>,
    /// The databases this machine runs: those its configuration's quiescers name, and those the
    /// snapshot's marker records it quiesced.
    #[serde(default)]
    pub databases: Vec<DatabaseCheck>,
    /// The restored volumes, each checked as an image.
    #[serde(default)]
    pub volumes: Vec<VolumeVerification>,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Everything `verify --image` found, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageVerification {
    /// The image or device checked.
    pub image: PathBuf,
    /// Its filesystem type, as blkid names it.
    pub fstype: String,
    /// When the platform read it, by the markers.
    pub probe: ProbeVerdict,
    /// The markers found, as `snapshot.moment`.
    pub markers: Vec<String>,
    /// The consistency the snapshot was taken as, from its `before` marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Consistency>,
    /// The journal's state, read before anything else.
    pub journal: JournalState,
    /// The journal logged the `after` marker's creation: part of the image was read after the
    /// thaw, even if the marker itself is not in it (ext4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_logged: bool,
    /// Whether the read-only filesystem check passed.
    pub filesystem_ok: bool,
    /// What the checker said, when it did not pass.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filesystem_report: String,
    /// Every database found in the image, started from it and checked.
    #[serde(default)]
    pub databases: Vec<DatabaseCheck>,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}
