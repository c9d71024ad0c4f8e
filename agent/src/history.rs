//! The agent's record of what it did, kept on disk for `status` and the metrics: its last runs
//! (bounded), counts that only grow (runs by result, the guard's thaws by reason), and the last
//! scheduled restore drill. Written after a run's thaw and resumes, never while anything is
//! frozen, and atomically ([`crate::atomic_file`]), so a crash or a reboot leaves the old record
//! or the new one, never half of one.

pub(crate) use freezeframe_contract::history::{History, RunRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The newest restore drill known (`verify.state_file`): the last one scheduled here, or a newer
/// one run elsewhere (`freezeframe verify`) that a run read from its tags on a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDrill {
    /// When it ran, in seconds since the Unix epoch.
    pub unix_seconds: u64,
    /// The snapshot it restored.
    pub snapshot: String,
    /// Whether it verified.
    pub verified: bool,
}

impl LastDrill {
    /// The recorded drill; none when there is no record (or one this version cannot read,
    /// which the next drill replaces).
    pub fn load(state_file: &Path) -> Option<LastDrill> {
        serde_json::from_slice(&std::fs::read(state_file).ok()?).ok()
    }

    /// Records this drill in `state_file`, atomically.
    pub fn store(&self, state_file: &Path) -> std::io::Result<()> {
        crate::atomic_file::replace(state_file, &serde_json::to_vec(self).unwrap_or_default(), 0o644)
    }

    /// Records this drill in `state_file` if it ran after the one recorded there (or none is):
    /// the newest drill is the last verification, wherever it ran. Failures are logged.
    pub(crate) fn keep_if_newer(&self, state_file: &Path) {
        if LastDrill::load(state_file).is_some_and(|known| known.unix_seconds >= self.unix_seconds) {
            return;
        }
        if let Err(e) = self.store(state_file) {
            tracing::warn!(
                "cannot record the last restore drill in {}: {e}",
                state_file.display()
            );
        }
    }
}

/// The record in `file`; empty when there is none. One this version cannot read is set
/// aside (`.unreadable`) with a warning, and a new one begins.
pub(crate) fn load(file: &Path) -> History {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return History::default(),
        Err(e) => {
            tracing::warn!("cannot read the run history {}: {e}", file.display());
            return History::default();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        let aside = file.with_extension("unreadable");
        tracing::warn!(
            "the run history {} cannot be read ({e}): kept as {}, a new one begins",
            file.display(),
            aside.display()
        );
        let _ = std::fs::rename(file, &aside);
        History::default()
    })
}

/// Writes the record to `file`, atomically.
fn store(history: &History, file: &Path) -> std::io::Result<()> {
    crate::atomic_file::replace(file, &serde_json::to_vec(history).unwrap_or_default(), 0o600)
}

/// The guard's notes that it thawed for an agent that died ([`crate::guard::DIED_NOTE_PREFIX`]), counted
/// into `history` and removed: the runtime directory does not survive a reboot, the history
/// does.
pub(crate) fn count_guard_notes(history: &mut History, runtime_dir: &Path) -> Vec<PathBuf> {
    let notes: Vec<PathBuf> = std::fs::read_dir(runtime_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(crate::guard::DIED_NOTE_PREFIX))
        })
        .collect();
    history.totals.guard_agent_died_thaws += notes.len() as u64;
    notes
}

/// The earlier runs of Droplet `droplet` whose snapshots do not carry their level yet, oldest
/// first (see [`RunRecord::tag_owed`]).
pub(crate) fn tags_owed(file: &Path, droplet: u64) -> Vec<RunRecord> {
    load(file)
        .runs
        .into_iter()
        .filter(|r| r.tag_owed && r.droplet_id == Some(droplet))
        .collect()
}

/// Adds `run` (when there is one) and the guard's notes to the history in `file`, and clears
/// the tags owed by the earlier runs named in `tags_settled` (tagged since, or given up);
/// whether it changed. Failures are logged: a run is not failed for its record.
pub(crate) fn record(
    file: &Path,
    keep: usize,
    runtime_dir: &Path,
    run: Option<RunRecord>,
    tags_settled: &[String],
) -> bool {
    let mut history = load(file);
    let notes = count_guard_notes(&mut history, runtime_dir);
    if run.is_none() && notes.is_empty() && tags_settled.is_empty() {
        return false;
    }
    for earlier in history.runs.iter_mut() {
        if tags_settled.contains(&earlier.snapshot_name) {
            earlier.tag_owed = false;
        }
    }
    if let Some(run) = run {
        history.add(run, keep);
    }
    match store(&history, file) {
        Ok(()) => {
            for note in notes {
                let _ = std::fs::remove_file(note);
            }
        }
        Err(e) => tracing::warn!("cannot keep the run history in {}: {e}", file.display()),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use freezeframe_contract::{Consistency, Status};

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
    fn a_drill_read_from_tags_replaces_only_an_older_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("drill.json");
        let drill = |at: u64, verified: bool| LastDrill {
            unix_seconds: at,
            snapshot: format!("s-{at}"),
            verified,
        };
        drill(200, true).keep_if_newer(&file);
        assert_eq!(
            LastDrill::load(&file),
            Some(drill(200, true)),
            "none recorded: kept"
        );
        drill(100, false).keep_if_newer(&file);
        assert_eq!(
            LastDrill::load(&file),
            Some(drill(200, true)),
            "an older one is not"
        );
        drill(300, false).keep_if_newer(&file);
        assert_eq!(LastDrill::load(&file), Some(drill(300, false)), "a newer one is");
    }

    #[test]
    fn a_record_survives_as_written_and_an_unreadable_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/history.json");
        let runtime = dir.path().join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        std::fs::write(runtime.join(format!("{}1-2", crate::guard::DIED_NOTE_PREFIX)), "").unwrap();
        assert!(record(
            &file,
            10,
            &runtime,
            Some(run(Status::Succeeded, 1.0)),
            &[]
        ));
        let written = load(&file);
        assert_eq!(written.totals.guard_agent_died_thaws, 1);
        assert_eq!(written.runs.len(), 1);
        assert!(!record(&file, 10, &runtime, None, &[]), "nothing new to record");
        assert_eq!(
            std::fs::read_dir(&runtime).unwrap().count(),
            0,
            "the guard's note was counted once"
        );
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file is left"
        );
        std::fs::write(&file, "{ not json").unwrap();
        assert_eq!(load(&file), History::default());
        assert!(file.with_extension("unreadable").exists());
    }
}
