//! The snapshot-point probe: a tiny marker on each frozen filesystem, written and synced before
//! the freeze (`before`) and right after the thaw (`after`), both naming the snapshot. An image
//! that holds `before` and not `after` was captured inside the frozen window; one that holds
//! `after` was read after the thaw. On the root filesystem the markers go to
//! `/var/lib/freezeframe/probe/`, elsewhere to `.freezeframe-probe/` at the top; each run
//! removes the markers of earlier snapshots, so they never grow. The top may be writable by
//! others (a 1777 disk): a probe folder that is a link, or not root's alone, is never used.

use crate::transaction::ports::{MarkerRecord, ProbeMoment, Target};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
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
    /// The boot it was written in (see [`boot_id`]); none in markers from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// Where the kernel tells this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id. A machine restored from a snapshot has booted since the snapshot was taken,
/// so a marker that carries the current boot's id is on the machine that wrote it, live, not on
/// a copy.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string(BOOT_ID).ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// Why a marker was not left.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// The probe folder is one the run must not write into: a link, not a folder, or a folder
    /// someone other than root owns or may write (who could plant a link at a marker's name).
    #[error(
        "the folder {why}, so it is not used and this filesystem gets no marker: remove it \
         (`rm -r {dir}`); the next run makes it anew, owned and writable by root alone",
        dir = .dir.display()
    )]
    UnsafeFolder {
        /// The folder.
        dir: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading, writing or flushing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Errno> for MarkError {
    fn from(e: Errno) -> Self {
        MarkError::Io(e.into())
    }
}

/// Writes and syncs the marker of `snapshot` at `moment`, holding `record`, into `dir`; before
/// the freeze, first removes the markers of other snapshots there. Root writes here at the top
/// of filesystems others may write: everything goes through the folder's descriptor, opened
/// without following a link and used only when it is root's alone ([`open_folder`]).
pub fn mark(dir: &Path, snapshot: &str, moment: ProbeMoment, record: &MarkerRecord) -> Result<(), MarkError> {
    let folder = open_folder(dir)?;
    if moment == ProbeMoment::Before {
        remove_others(&folder, snapshot)?;
    }
    let content = MarkerContent {
        snapshot: snapshot.to_string(),
        moment,
        record: record.clone(),
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        boot_id: boot_id(),
    };
    let name = marker_name(snapshot, moment);
    // A marker of this name from an earlier run of the same name goes first (O_EXCL below).
    match unlinkat(&folder, name.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let created = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut file = std::fs::File::from(openat(
        &folder,
        name.as_str(),
        created,
        Mode::from_bits_truncate(0o644),
    )?);
    writeln!(
        file,
        "{}",
        serde_json::to_string(&content).map_err(std::io::Error::from)?
    )?;
    file.sync_all()?;
    // The directory entry too: a marker the image lacks must be one that was never written.
    Ok(nix::unistd::fsync(&folder)?)
}

/// The probe folder `dir`, made if missing, opened without following a link (its parents
/// through [`crate::atomic_file::open_dir`]), and refused unless it is a folder that root owns
/// and alone may write.
fn open_folder(dir: &Path) -> Result<OwnedFd, MarkError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(unsafe_folder(dir, "is no folder's name".into()));
    };
    let parent = crate::atomic_file::open_dir(parent, Some(0o755))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let opened = match openat(&parent, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            match nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            openat(&parent, name, flags, Mode::empty())
        }
        other => other,
    };
    let folder = match opened {
        Ok(folder) => folder,
        Err(Errno::ELOOP | Errno::ENOTDIR) if crate::atomic_file::is_link(&parent, name)? => {
            return Err(unsafe_folder(dir, "is a symbolic link".into()))
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(unsafe_folder(dir, "is not a folder".into())),
        Err(e) => return Err(e.into()),
    };
    let stat = nix::sys::stat::fstat(folder.as_fd())?;
    let me = nix::unistd::geteuid().as_raw();
    if stat.st_uid != 0 && stat.st_uid != me {
        return Err(unsafe_folder(
            dir,
            format!("belongs to uid {}, not root", stat.st_uid),
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        let mode = stat.st_mode & 0o7777;
        return Err(unsafe_folder(
            dir,
            format!("may be written by others (mode {mode:o})"),
        ));
    }
    Ok(folder)
}

fn unsafe_folder(dir: &Path, why: String) -> MarkError {
    MarkError::UnsafeFolder {
        dir: dir.to_path_buf(),
        why,
    }
}

/// Removes the markers of snapshots other than `snapshot` from `folder`: regular files whose
/// names are markers' only, each relative to the folder's descriptor.
fn remove_others(folder: &OwnedFd, snapshot: &str) -> Result<(), MarkError> {
    use std::os::fd::AsRawFd;
    // Listed through the descriptor itself (/proc/self/fd: the folder we opened, wherever it
    // is now), never through its path.
    let listed = std::fs::read_dir(format!("/proc/self/fd/{}", folder.as_raw_fd()))?;
    let names: Vec<std::ffi::OsString> = listed.filter_map(|e| Some(e.ok()?.file_name())).collect();
    for name in names {
        let Some(marked) = name.to_str().and_then(marker_of) else {
            continue;
        };
        if marked == snapshot {
            continue;
        }
        let stat = nix::sys::stat::fstatat(folder, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if stat.st_mode & libc::S_IFMT == libc::S_IFREG {
            match unlinkat(folder, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The snapshot a marker's file name is of, if it is a marker's name.
fn marker_of(name: &str) -> Option<&str> {
    ProbeMoment::ALL
        .into_iter()
        .find_map(|moment| name.strip_suffix(&format!(".{}", moment.as_str())))
        .filter(|snapshot| !snapshot.is_empty())
}

/// The markers found in a probe folder of a restored filesystem: (snapshot, moment). For the
/// tests (verify reads markers its own way, inside the image).
#[cfg(any(test, feature = "test-kit"))]
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
        let read: MarkerContent = serde_json::from_str(&text).unwrap();
        assert_eq!(read.record, recorded);
    }
    #[test]
    fn a_linked_or_shared_probe_folder_is_never_used() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("canary"), b"kept").unwrap();
        let record = MarkerRecord {
            consistency: crate::transaction::ports::Consistency::Crash,
            log_positions: Vec::new(),
            databases: Vec::new(),
        };
        let linked = dir.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        symlink(&elsewhere, linked.join(PROBE_DIR)).unwrap();
        let err = mark(&linked.join(PROBE_DIR), "s", ProbeMoment::Before, &record).unwrap_err();
        assert!(matches!(err, MarkError::UnsafeFolder { .. }), "{err}");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(elsewhere.join("canary")).unwrap(), b"kept");
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            1,
            "no marker there"
        );
        let shared = dir.path().join("shared").join(PROBE_DIR);
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = mark(&shared, "s", ProbeMoment::After, &record).unwrap_err();
        assert!(
            err.to_string().contains("may be written by others (mode 777)"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
    }
}
