//! The agent's record of what it did, as `Status` answers it (`history`): its last runs
//! (bounded) and counts that only grow (runs by result, the guard's thaws by reason). The agent
//! keeps it on disk; this is its shape and how a run enters it.

use crate::report::{Report, Status};
use crate::{Consistency, GuardEvent};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// What the agent keeps (`history.file`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Counts since the record began; trimming the runs does not lower them.
    pub totals: Totals,
    /// The last runs, oldest first, at most `history.keep`.
    pub runs: Vec<RunRecord>,
}

/// Counts since the record began.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Runs that did everything asked.
    pub succeeded: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Freezes the guard ended at `max_freeze`.
    pub guard_deadline_thaws: u64,
    /// Freezes the guard ended because the agent died while holding them.
    pub guard_agent_died_thaws: u64,
}

/// One run, as `status` lists it and the metrics read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// When it ended, likewise.
    pub finished_unix: f64,
    /// How it ended.
    pub status: Status,
    /// What the snapshot achieved; none when no snapshot was requested.
    pub consistency: Option<Consistency>,
    /// The snapshot's name; empty when the run did not start.
    pub snapshot_name: String,
    /// The snapshot's id, when the run waited for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The provider's handle on the request, once the snapshot was requested and taken (or
    /// found taken after a failed request): a failed run without one made no snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    /// The Droplet it is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet_id: Option<u64>,
    /// The consistency group it was a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Time spent quiescing, in milliseconds.
    pub quiesce_ms: f64,
    /// First FIFREEZE to last FITHAW: how long writes were blocked.
    pub frozen_ms: f64,
    /// The snapshot request, inside the window.
    pub request_ms: f64,
    /// The whole run.
    pub total_ms: f64,
    /// The guard ended the freeze at the deadline.
    #[serde(default)]
    pub guard_deadline_thaw: bool,
    /// Snapshots of this machine kept after retention, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_kept: Option<u64>,
    /// Where each database stood in the snapshot (a restore is matched to a replica or a
    /// point-in-time recovery by it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<DatabasePosition>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The snapshots of its attached volumes, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshot_ids: Vec<String>,
    /// It made a snapshot that does not carry its level yet (it did not wait for completion):
    /// a later run tags it once it is complete, and clears this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tag_owed: bool,
}

impl RunRecord {
    /// Whether the run made a snapshot (complete or not): it succeeded, or its request was
    /// taken. Records kept before `action_id` was, judged by the level their request achieved.
    pub fn made_snapshot(&self) -> bool {
        self.status == Status::Succeeded
            || self.snapshot_id.is_some()
            || self.action_id.is_some()
            || self.consistency.is_some()
    }

    /// The record of `report`, a run from `started` to `finished`.
    pub fn of(report: &Report, started: SystemTime, finished: SystemTime) -> RunRecord {
        RunRecord {
            started_unix: unix(started),
            finished_unix: unix(finished),
            status: report.status,
            consistency: report.consistency,
            snapshot_name: report.snapshot_name.clone(),
            snapshot_id: report.snapshot_id.clone(),
            action_id: report.action_id.clone(),
            droplet_id: report.droplet_id,
            group: report.group.as_ref().map(|g| g.id.clone()),
            quiesce_ms: report.quiesce_ms,
            frozen_ms: report.frozen_ms,
            request_ms: report.request_ms,
            total_ms: report.total_ms,
            guard_deadline_thaw: report.guard_event == Some(GuardEvent::DeadlineThawed),
            snapshots_kept: report.snapshots_kept,
            positions: report
                .quiescers
                .iter()
                .filter(|q| q.log_position.is_some() || q.details.is_some())
                .map(|q| DatabasePosition {
                    quiescer: q.name.clone(),
                    lsn: q.log_position.as_ref().map(|p| p.lsn.clone()),
                    details: q.details.clone(),
                })
                .collect(),
            error: report.error.clone(),
            volume_snapshot_ids: report
                .volume_snapshots
                .iter()
                .map(|v| v.snapshot_id.clone())
                .collect(),
            // A run that waited tagged what it made (or warned that it could not).
            tag_owed: report.consistency.is_some()
                && report.action_id.is_some()
                && report.snapshot_id.is_none(),
        }
    }
}

/// Where one database stood in a run's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabasePosition {
    /// The quiescer, as the report names it.
    pub quiescer: String,
    /// PostgreSQL's write-ahead log position once prepared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// What the quiescer recorded, such as MariaDB's binary log position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl History {
    /// Adds `run`, keeping the last `keep` runs.
    pub fn add(&mut self, run: RunRecord, keep: usize) {
        match run.status {
            Status::Succeeded => self.totals.succeeded += 1,
            Status::Failed => self.totals.failed += 1,
        }
        if run.guard_deadline_thaw {
            self.totals.guard_deadline_thaws += 1;
        }
        self.runs.push(run);
        let over = self.runs.len().saturating_sub(keep.max(1));
        self.runs.drain(..over);
    }

    /// The last run that succeeded.
    pub fn last_success(&self) -> Option<&RunRecord> {
        self.runs.iter().rev().find(|r| r.status == Status::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Consistency;

    fn run(status: Status, at: f64) -> RunRecord {
        RunRecord {
            started_unix: at,
            finished_unix: at + 1.0,
            status,
            consistency: Some(Consistency::Application),
            snapshot_name: format!("run-{at}"),
            snapshot_id: None,
            action_id: None,
            droplet_id: Some(3164444),
            group: None,
            quiesce_ms: 1.0,
            frozen_ms: 300.0,
            request_ms: 299.0,
            total_ms: 900.0,
            guard_deadline_thaw: false,
            snapshots_kept: None,
            positions: Vec::new(),
            error: None,
            volume_snapshot_ids: Vec::new(),
            tag_owed: false,
        }
    }

    #[test]
    fn the_runs_are_bounded_and_the_counts_are_not() {
        let mut history = History::default();
        for i in 0..7 {
            let status = if i % 3 == 2 {
                Status::Failed
            } else {
                Status::Succeeded
            };
            history.add(run(status, i as f64), 3);
        }
        assert_eq!(history.runs.len(), 3);
        assert_eq!(history.runs[0].started_unix, 4.0, "the oldest go first");
        assert_eq!((history.totals.succeeded, history.totals.failed), (5, 2));
        assert_eq!(history.last_success().unwrap().started_unix, 6.0);
    }
}
