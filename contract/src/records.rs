//! The records that cross the bus inside answers: how consistent a snapshot is, a provider's
//! snapshots as `ListSnapshots` and `Prune` give them, a volume snapshot, a database's log
//! position, and what is left of the API's budget.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How consistent the snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Every quiescer prepared and every filesystem was frozen across the request.
    Application,
    /// Every filesystem was frozen across the request; applications were not quiesced.
    Filesystem,
    /// The freeze did not cover the request: as if the power had been cut.
    Crash,
}

impl Consistency {
    /// This, or `cap` if that is weaker.
    pub fn capped(self, cap: Consistency) -> Consistency {
        let rank = |c: Consistency| match c {
            Consistency::Crash => 0,
            Consistency::Filesystem => 1,
            Consistency::Application => 2,
        };
        if rank(cap) < rank(self) {
            cap
        } else {
            self
        }
    }

    /// Every level, strongest first.
    pub const ALL: [Consistency; 3] = [
        Consistency::Application,
        Consistency::Filesystem,
        Consistency::Crash,
    ];

    /// As in names and reports: `application`, `filesystem`, `crash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Application => "application",
            Consistency::Filesystem => "filesystem",
            Consistency::Crash => "crash",
        }
    }
}

/// Where a database's write-ahead log stood when it was prepared, before the freeze: every
/// record before it was durable, so a restore's recovery must replay at least that far. WAL
/// damaged before it would otherwise end recovery early without a word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    /// The database's data directory on the machine that was snapshotted.
    pub data_directory: PathBuf,
    /// PostgreSQL's LSN, such as `0/3000148`.
    pub lsn: String,
}

/// A volume snapshot taken with the machine's snapshot, as one consistent group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshotRef {
    /// The volume's id.
    pub volume_id: String,
    /// The volume's name.
    pub volume_name: String,
    /// Where its filesystem is mounted.
    pub mountpoint: PathBuf,
    /// The volume snapshot's id.
    pub snapshot_id: String,
}

/// The consistency recorded on a snapshot: what a live run reached, or `offline` (taken while
/// the Droplet was off, by `snapshot --offline`: the strongest there is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordedConsistency {
    /// Taken while the machine was off.
    Offline,
    /// See [`Consistency::Application`].
    Application,
    /// See [`Consistency::Filesystem`].
    Filesystem,
    /// See [`Consistency::Crash`].
    Crash,
}

impl RecordedConsistency {
    /// As reports and tags write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedConsistency::Offline => "offline",
            RecordedConsistency::Application => Consistency::Application.as_str(),
            RecordedConsistency::Filesystem => Consistency::Filesystem.as_str(),
            RecordedConsistency::Crash => Consistency::Crash.as_str(),
        }
    }

    /// The level `text` names.
    pub fn parse(text: &str) -> Option<RecordedConsistency> {
        let offline = RecordedConsistency::Offline;
        if text == offline.as_str() {
            return Some(offline);
        }
        Consistency::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .map(RecordedConsistency::from)
    }
}

impl From<Consistency> for RecordedConsistency {
    fn from(level: Consistency) -> Self {
        match level {
            Consistency::Application => RecordedConsistency::Application,
            Consistency::Filesystem => RecordedConsistency::Filesystem,
            Consistency::Crash => RecordedConsistency::Crash,
        }
    }
}

/// A snapshot the provider holds, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The provider's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// RFC 3339, as the provider gives it.
    pub created_at: String,
    /// Its size, when the provider tells it.
    pub size_bytes: Option<u64>,
    /// What a restore drill of it found, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillResult>,
    /// The consistency group it belongs to, when its name says (the agent fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The consistency its run recorded on it (a tag), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<RecordedConsistency>,
}

/// What a restore drill (`freezeframe verify`) found for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillResult {
    /// It restored, and every check passed.
    Verified,
    /// It did not restore, or a check failed.
    Failed,
}

/// A snapshot deleted by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// The provider's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// What is left of an API's hourly request budget (DigitalOcean's `ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiBudget {
    /// Requests left.
    pub remaining: u64,
    /// When the oldest counted request leaves the window (Unix seconds).
    pub reset_unix: u64,
}
