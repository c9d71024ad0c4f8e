//! The record of what is frozen, kept in the runtime directory (`/run/freezeframe/frozen.json`)
//! from just before the first FIFREEZE until after the last FITHAW. If both the agent and its
//! guard are gone and the record remains, `freezeframe-agent thaw` (also run as the service's
//! `ExecStopPost=`) and the next agent thaw what it lists.

use crate::kernel::sys;
use crate::transaction::ports::DevNum;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the record inside the runtime directory.
pub(crate) const RECORD_FILE: &str = "frozen.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FrozenRecord {
    pub agent_pid: u32,
    pub guard_pid: u32,
    /// Wall-clock time of the freeze, milliseconds since the Unix epoch.
    pub frozen_at_unix_ms: u64,
    /// The guard's bound on the freeze (in milliseconds in the file).
    #[serde(rename = "max_freeze_ms", with = "freezeframe_contract::millis")]
    pub max_freeze: std::time::Duration,
    /// In freeze order; thawed in reverse.
    pub filesystems: Vec<RecordedFilesystem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedFilesystem {
    pub mountpoint: PathBuf,
    pub mount_id: u64,
    pub dev: String,
}

impl RecordedFilesystem {
    pub(crate) fn new(mountpoint: &Path, mount_id: u64, dev: DevNum) -> Self {
        RecordedFilesystem {
            mountpoint: mountpoint.to_path_buf(),
            mount_id,
            dev: dev.to_string(),
        }
    }
}

/// Writes the record atomically ([`crate::atomic_file`]), before the first FIFREEZE.
pub(crate) fn write(path: &Path, record: &FrozenRecord) -> std::io::Result<()> {
    crate::atomic_file::replace(path, &serde_json::to_vec_pretty(record)?, 0o600)
}

/// Reads the record, if there is one.
pub(crate) fn read(path: &Path) -> std::io::Result<Option<FrozenRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the record; a missing one is fine.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What happened to one filesystem on an emergency thaw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ThawOutcome {
    /// FITHAW succeeded.
    Thawed,
    /// It was not frozen (FITHAW answered EINVAL).
    WasNotFrozen,
    /// Something else is mounted there now; left alone.
    MountChanged,
    /// FITHAW failed, with the reason.
    Failed(String),
}

impl std::fmt::Display for ThawOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThawOutcome::Thawed => write!(f, "thawed"),
            ThawOutcome::WasNotFrozen => write!(f, "was not frozen"),
            ThawOutcome::MountChanged => write!(f, "a different filesystem is mounted there now; left alone"),
            ThawOutcome::Failed(e) => write!(f, "thaw failed: {e}"),
        }
    }
}

/// Thaws what `record` lists, in reverse freeze order. A filesystem is thawed only if the path
/// still leads to the recorded mount or device.
pub(crate) fn thaw_recorded(record: &FrozenRecord) -> Vec<(PathBuf, ThawOutcome)> {
    // Mount ids are reused, so the filesystem behind the id must be the recorded one too.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| crate::kernel::mountinfo::parse(&text).ok())
        .unwrap_or_default();
    record
        .filesystems
        .iter()
        .rev()
        .map(|fs| {
            let outcome = match sys::open_mountpoint(&fs.mountpoint) {
                Err(e) => ThawOutcome::Failed(format!("cannot open: {e}")),
                Ok(fd) => {
                    let mount_id = sys::mount_id_of(&fd).ok();
                    let same = mounts
                        .iter()
                        .any(|m| Some(m.mount_id) == mount_id && m.dev.to_string() == fs.dev)
                        || sys::dev_of(&fd).ok().map(|d| d.to_string()).as_deref() == Some(fs.dev.as_str());
                    if same {
                        thaw_one(&fd)
                    } else {
                        ThawOutcome::MountChanged
                    }
                }
            };
            (fs.mountpoint.clone(), outcome)
        })
        .collect()
}

/// Thaws the filesystem behind `fd`, telling "not frozen" apart from failure.
pub(crate) fn thaw_one(fd: &std::os::fd::OwnedFd) -> ThawOutcome {
    match sys::thaw(fd) {
        Ok(()) => ThawOutcome::Thawed,
        Err(nix::Error::EINVAL) => ThawOutcome::WasNotFrozen,
        Err(e) => ThawOutcome::Failed(e.desc().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        assert_eq!(read(&path).unwrap(), None);
        let rec = FrozenRecord {
            agent_pid: 10,
            guard_pid: 11,
            frozen_at_unix_ms: 1,
            max_freeze: std::time::Duration::from_secs(20),
            filesystems: vec![RecordedFilesystem::new(
                Path::new("/data"),
                31,
                DevNum { major: 7, minor: 1 },
            )],
        };
        write(&path, &rec).unwrap();
        assert_eq!(read(&path).unwrap(), Some(rec));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        std::fs::write(&path, "{").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains(RECORD_FILE), "{err}");
    }
}
