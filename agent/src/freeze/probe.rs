//! The snapshot-point probe: a tiny marker on each frozen filesystem, written and synced before
//! the freeze (`before`) and right after the thaw (`after`), both naming the snapshot. An image
//! that holds `before` and not `after` was captured inside the frozen window; one that holds
//! `after` was read after the thaw. On the root filesystem the markers go to
//! `/var/lib/freezeframe/probe/`, elsewhere to `.freezeframe-probe/` at the top; each run
//! removes the markers of earlier snapshots, so they never grow.

use crate::transaction::ports::{MarkerRecord, ProbeMoment, Target};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The probe folder on the root filesystem.
pub const ROOT_PROBE_DIR: &str = "/var/lib/freezeframe/probe";
/// The probe folder at the top of every other filesystem.
pub const PROBE_DIR: &str = ".freezeframe-probe";

/// The marker file for `snapshot` at `moment`, in a probe folder.
pub fn marker_name(snapshot: &str, moment: ProbeMoment) -> String {
    format!("{snapshot}.{}", moment.as_str())
}

/// Where `target`'s markers go: `/var/lib/freezeframe/probe` for `/` when that folder lies on
/// the root filesystem (not on a `/var` of its own), `.freezeframe-probe` at the top otherwise.
pub fn probe_dir(target: &Target, targets: &[Target]) -> PathBuf {
    if target.mountpoint == Path::new("/") {
        let root_dir = Path::new(ROOT_PROBE_DIR);
        let existing = root_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        if matches!(super::target_holding(existing, targets), Ok(Some(mp)) if mp == Path::new("/")) {
            return root_dir.to_path_buf();
        }
    }
    target.mountpoint.join(PROBE_DIR)
}

/// What a marker holds: its snapshot, its moment, what the run records for `verify` (the
/// consistency it claims, its databases' log positions and endpoints), and when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerContent {
    /// The snapshot's name.
    pub snapshot: String,
    /// Before the freeze, or after the thaw.
    pub moment: ProbeMoment,
    /// What the run records.
    #[serde(flatten)]
    pub record: MarkerRecord,
    /// When it was written, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// Writes and syncs the marker of `snapshot` at `moment`, holding `record`, into `dir`; before
/// the freeze, first removes the markers of other snapshots there.
pub fn mark(dir: &Path, snapshot: &str, moment: ProbeMoment, record: &MarkerRecord) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    if moment == ProbeMoment::Before {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let ours = path
                .file_stem()
                .is_some_and(|stem| stem == std::ffi::OsStr::new(snapshot));
            if !ours && path.is_file() {
                std::fs::remove_file(&path)?;
            }
        }
    }
    let content = MarkerContent {
        snapshot: snapshot.to_string(),
        moment,
        record: record.clone(),
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let path = dir.join(marker_name(snapshot, moment));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)?;
    writeln!(file, "{}", serde_json::to_string(&content)?)?;
    file.sync_all()?;
    // The directory entry too: a marker the image lacks must be one that was never written.
    std::fs::File::open(dir)?.sync_all()
}

/// What the `before` marker of `snapshot` in `dir` holds, if it is there and readable.
pub fn claimed(dir: &Path, snapshot: &str) -> Option<MarkerContent> {
    let text = std::fs::read_to_string(dir.join(marker_name(snapshot, ProbeMoment::Before))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The markers found in a probe folder of a restored filesystem: (snapshot, moment).
pub fn markers_in(dir: &Path) -> Vec<(String, ProbeMoment)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, ProbeMoment)> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            ProbeMoment::ALL.into_iter().find_map(|moment| {
                let snapshot = name.strip_suffix(&format!(".{}", moment.as_str()))?;
                Some((snapshot.to_string(), moment))
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_leaves_its_two_markers_and_removes_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join(PROBE_DIR);
        use crate::transaction::ports::{Consistency, DatabaseEndpoint, LogPosition};
        let plain = MarkerRecord {
            consistency: Consistency::Application,
            log_positions: Vec::new(),
            databases: Vec::new(),
        };
        let recorded = MarkerRecord {
            log_positions: vec![LogPosition {
                data_directory: PathBuf::from("/var/lib/postgresql/15/main"),
                lsn: "0/3000148".into(),
            }],
            databases: vec![DatabaseEndpoint::Postgresql {
                socket_dir: "/var/run/postgresql".into(),
                port: 5432,
                os_user: "postgres".into(),
            }],
            ..plain.clone()
        };
        mark(&probe, "web-1-old", ProbeMoment::Before, &plain).unwrap();
        mark(&probe, "web-1-old", ProbeMoment::After, &plain).unwrap();
        mark(&probe, "web-1-new", ProbeMoment::Before, &recorded).unwrap();
        assert_eq!(
            markers_in(&probe),
            [("web-1-new".to_string(), ProbeMoment::Before)]
        );
        mark(&probe, "web-1-new", ProbeMoment::After, &recorded).unwrap();
        assert_eq!(
            markers_in(&probe),
            [
                ("web-1-new".to_string(), ProbeMoment::After),
                ("web-1-new".to_string(), ProbeMoment::Before)
            ]
        );
        let text = std::fs::read_to_string(probe.join("web-1-new.before")).unwrap();
        assert!(
            text.starts_with("{\"snapshot\":\"web-1-new\",\"moment\":\"before\""),
            "{text}"
        );
        // What verify reads back: the claim, the WAL positions and the databases.
        assert_eq!(claimed(&probe, "web-1-new").unwrap().record, recorded);
    }
}
