//! The result of one snapshot transaction, as printed by `snapshot --json`, sent as the
//! `JobFinished` signal's report and kept as `Status`'s `last_result`.

use crate::{ApiBudget, Consistency, GuardEvent, LogPosition, Pruned, Skipped, Target, VolumeSnapshotRef};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The phases of a transaction, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Everything checked; nothing changed yet.
    Preflight,
    /// Applications brought to a consistent state.
    Quiesce,
    /// Filesystems flushed, outside the window.
    Sync,
    /// A group's member, flushed: waiting for the coordinator's word to freeze.
    Ready,
    /// FIFREEZE, in plan order.
    Freeze,
    /// A group's member, frozen: waiting for the coordinator's word to request.
    Hold,
    /// The snapshot asked for, inside the window.
    Request,
    /// FITHAW, in reverse.
    Thaw,
    /// Applications resumed, in reverse.
    Resume,
    /// Until the snapshot completed (`--wait`).
    Wait,
    /// Older snapshots deleted (retention).
    Prune,
}

impl Phase {
    /// What the agent is doing in this phase, in words for a status line (sd_notify STATUS=).
    /// "frozen" marks the window, for whoever watches from outside.
    pub fn activity(self) -> &'static str {
        match self {
            Phase::Preflight => "checking",
            Phase::Quiesce => "quiescing applications",
            Phase::Sync => "flushing filesystems",
            Phase::Ready => "waiting for the group to be ready",
            Phase::Freeze => "freezing filesystems",
            Phase::Hold => "frozen: waiting for the group to commit",
            Phase::Request => "frozen: requesting the snapshot",
            Phase::Thaw => "thawing filesystems",
            Phase::Resume => "resuming applications",
            Phase::Wait => "waiting for the snapshot to complete",
            Phase::Prune => "deleting old snapshots",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        write!(f, "{}", s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
/// How a run ended.
pub enum Status {
    /// Everything asked was done.
    Succeeded,
    /// Something failed: `failed_phase` and `error` say what.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// How long a phase took.
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// Its duration in milliseconds.
    pub ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// What one quiescer did.
pub struct QuiescerReport {
    /// Its name, such as `postgresql@15-main`.
    pub name: String,
    /// Its prepare succeeded.
    pub prepared: bool,
    /// Its resume succeeded.
    pub resumed: bool,
    /// What the quiescer recorded, such as a binary log position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Where the database's write-ahead log stood once prepared (what verify holds a restore to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_position: Option<LogPosition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What failed, if anything did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
/// What was frozen and what was not.
pub struct FilesystemsReport {
    /// Frozen, in freeze order.
    pub frozen: Vec<Target>,
    /// Not frozen, and why.
    pub skipped: Vec<Skipped>,
}

/// A consistency group's member: its group, and its own times at the group's barriers (the
/// coordinator puts them beside its own clock's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group's id, in every member's snapshot name.
    pub id: String,
    /// Quiesced and flushed, waiting for the word to freeze.
    pub ready_ms: f64,
    /// Frozen, waiting for the word to request (from the last FIFREEZE).
    pub held_ms: f64,
    /// From the word to request until the snapshot registered and the thaw began; absent when
    /// the group did not commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_to_thaw_ms: Option<f64>,
    /// The coordinator left the bus (killed, or its connection cut) while this member's job
    /// ran: when, against its commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator_left: Option<CoordinatorLeft>,
}

/// When a group member's coordinator left the bus, against its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordinatorLeft {
    /// Before it committed: the member thawed and resumed at once and requested nothing.
    BeforeCommit,
    /// After it committed: the member's request was out, and it thawed as its snapshot
    /// registered; whether every other member had the commit is not known here.
    AfterCommit,
}

/// Everything about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// How the run ended.
    pub status: Status,
    /// The snapshot's name; empty when the run did not start.
    pub snapshot_name: String,
    /// The provider that took it.
    pub provider: String,
    /// The provider's handle on the request (an action id, an image name).
    pub action_id: Option<String>,
    /// The snapshot's id, with --wait.
    pub snapshot_id: Option<String>,
    /// Its size as the provider reports it, with --wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_size_bytes: Option<u64>,
    /// Where the snapshot is kept, when that is a place on this machine (local-image: its
    /// folder, which holds an image per filesystem and a manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Snapshots of attached volumes, taken in the same frozen window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshots: Vec<VolumeSnapshotRef>,
    /// Older snapshots deleted by retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<Pruned>,
    /// `None` when no snapshot was requested.
    pub consistency: Option<Consistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The phase that failed first.
    pub failed_phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why it failed.
    pub error: Option<String>,
    /// The run failed on this machine's set-up (its configuration, the token file), which the
    /// user must fix first: the binaries exit 2 for it, as for a bad configuration.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup_error: bool,
    /// What did not stop the run but matters.
    pub warnings: Vec<String>,
    /// Frozen and skipped filesystems.
    pub filesystems: FilesystemsReport,
    /// Each quiescer, in prepare order.
    pub quiescers: Vec<QuiescerReport>,
    /// Time spent quiescing.
    pub quiesce_ms: f64,
    /// Time spent flushing, before the window.
    pub sync_ms: f64,
    /// First FIFREEZE to last FITHAW.
    pub frozen_ms: f64,
    /// Inside the window: in the FIFREEZE calls (each waits for its filesystem's writers and
    /// journal), ...
    pub freezing_ms: f64,
    /// ... in the provider request, ...
    pub request_ms: f64,
    /// ... and in the FITHAW calls.
    pub thawing_ms: f64,
    /// Time spent resuming.
    pub resume_ms: f64,
    /// The whole run.
    pub total_ms: f64,
    /// Calls made to the provider's API during the run (DigitalOcean: what it cost the token's
    /// rate limits).
    #[serde(default)]
    pub provider_calls: u64,
    /// What the provider's API said was left of the token's hourly budget as the run ended
    /// (a fleet's coordinator paces on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_budget: Option<ApiBudget>,
    /// For a member of a consistency group: the group and its barriers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupReport>,
    /// The Droplet the snapshot is of, when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet_id: Option<u64>,
    /// What the thaw guard did on its own during the window, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard_event: Option<GuardEvent>,
    /// This machine's snapshots left after retention, when retention ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_kept: Option<u64>,
    /// Each phase, in order.
    pub phases: Vec<PhaseTiming>,
}

impl Report {
    /// A run that has done nothing yet: succeeded so far, every figure zero.
    pub fn new(snapshot_name: String, provider: String) -> Report {
        Report {
            status: Status::Succeeded,
            snapshot_name,
            provider,
            action_id: None,
            snapshot_id: None,
            snapshot_size_bytes: None,
            location: None,
            volume_snapshots: Vec::new(),
            pruned: Vec::new(),
            consistency: None,
            failed_phase: None,
            error: None,
            setup_error: false,
            warnings: Vec::new(),
            filesystems: FilesystemsReport::default(),
            quiescers: Vec::new(),
            quiesce_ms: 0.0,
            sync_ms: 0.0,
            frozen_ms: 0.0,
            freezing_ms: 0.0,
            request_ms: 0.0,
            thawing_ms: 0.0,
            resume_ms: 0.0,
            total_ms: 0.0,
            provider_calls: 0,
            provider_budget: None,
            group: None,
            droplet_id: None,
            guard_event: None,
            snapshots_kept: None,
            phases: Vec::new(),
        }
    }

    /// A job that failed before its transaction could start (another run holds the lock, the
    /// plan failed): nothing ran, nothing was named.
    pub fn not_started(error: String) -> Report {
        Report {
            status: Status::Failed,
            error: Some(error),
            ..Report::new(String::new(), String::new())
        }
    }
}

/// Milliseconds with microsecond resolution.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
