//! The runtime directory (`/run/freezeframe` by default, on tmpfs): the lock that lets only one
//! transaction run at a time, the record of what is frozen, and the one way back from a dead
//! agent ([`recover`]), used by `freezeframe-agent thaw`, the service's `Thaw`, the CLI when no
//! agent answers, and the next run.

use crate::guard::record::{self, ThawOutcome};
use crate::quiesce::{owed, pending};
pub(crate) use freezeframe_contract::{Recovered, RecoveredFilesystem, RecoveredResume};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "lock";

/// Why the runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    /// It cannot be made, opened or written.
    #[error("cannot use the runtime directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Someone else could write it: what it records would be theirs to choose.
    #[error(
        "cannot use the runtime directory {path}: {why}; root keeps its lock and the records of \
         what to thaw and resume there, so it must be a folder that root owns and no one else may \
         write (remove it, or set `agent.runtime_dir` to such a folder)"
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Another run holds its lock.
    #[error("busy: another snapshot is in progress on this machine{}; wait for it to finish", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        /// The holder, when known.
        pid: Option<u32>,
    },
}

pub(crate) struct RuntimeDir {
    path: PathBuf,
}

/// Held while a transaction runs. The thaw guard inherits it, so a new transaction cannot start
/// while an old guard still holds filesystems.
pub(crate) struct TransactionLock {
    _lock: Flock<File>,
}

impl RuntimeDir {
    /// Creates the directory (mode 0700) if needed, and refuses one that others could write.
    pub(crate) fn open(path: &Path) -> Result<Self, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| RuntimeError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        check_private(path)?;
        Ok(RuntimeDir {
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn record_path(&self) -> PathBuf {
        self.path.join(record::RECORD_FILE)
    }

    /// Takes the transaction lock, or says who holds it.
    pub(crate) fn lock(&self) -> Result<TransactionLock, RuntimeError> {
        let path = self.path.join(LOCK_FILE);
        let dir_err = |source| RuntimeError::Dir {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // Never through a link: the lock is opened for writing, as root.
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(dir_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let pid = std::process::id().to_string();
                lock.set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()))
                    .map_err(dir_err)?;
                Ok(TransactionLock { _lock: lock })
            }
            Err((mut file, nix::Error::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(RuntimeError::Busy {
                    pid: text.trim().parse().ok(),
                })
            }
            Err((_, e)) => Err(dir_err(e.into())),
        }
    }
}

/// What recovery did to the filesystem recorded at `mountpoint`, as `Thaw` answers it.
pub(crate) fn recovered_filesystem((mountpoint, outcome): (PathBuf, ThawOutcome)) -> RecoveredFilesystem {
    let (outcome, error) = match outcome {
        ThawOutcome::Thawed => ("thawed", String::new()),
        ThawOutcome::WasNotFrozen => ("was-not-frozen", String::new()),
        ThawOutcome::MountChanged => ("mount-changed", String::new()),
        ThawOutcome::Failed(e) => ("failed", e),
    };
    RecoveredFilesystem {
        mountpoint: mountpoint.display().to_string(),
        outcome: outcome.into(),
        error,
    }
}

/// The way back from a dead agent: thaws what the frozen record in `dir` lists and removes the
/// record, then runs the resumes the agent owed (`pending-resumes`), last prepared first.
/// Filesystems come first because a resume (a hook, a service starting) may need to write to
/// them. Needs no lock: it is the emergency exit (a next run calls it with the lock held).
/// systemd is reached through `bus` (the system bus when `None`) only if a unit is owed.
pub(crate) async fn recover(
    dir: &Path,
    bus: Option<&zbus::Connection>,
    hook_timeout: std::time::Duration,
) -> std::io::Result<Recovered> {
    let mut recovered = Recovered::default();
    // Its records name mountpoints to thaw, units to start and hooks to run, as root.
    match check_private(dir) {
        Err(RuntimeError::Dir { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(recovered)
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
        Ok(()) => {}
    }
    let path = dir.join(record::RECORD_FILE);
    if let Some(rec) = record::read(&path)? {
        recovered.filesystems = record::thaw_recorded(&rec)
            .into_iter()
            .map(recovered_filesystem)
            .collect();
        record::remove(&path)?;
    }
    if !pending::recorded(dir).is_empty() {
        let units = crate::systemd::connect_or_unreachable(bus).await;
        recovered.resumes = owed::resume_recorded(dir, units.as_ref(), hook_timeout)
            .await
            .into_iter()
            .map(|(entry, outcome)| RecoveredResume {
                resume: entry.to_string(),
                ok: outcome.is_ok(),
                error: outcome
                    .err()
                    .map(|e| crate::errors::error_chain(&e))
                    .unwrap_or_default(),
            })
            .collect();
    }
    Ok(recovered)
}

/// Refuses a runtime directory that is a link, not a folder, or one that anyone but root (or
/// this process's own user) could write: its records say what root thaws, starts and runs.
fn check_private(path: &Path) -> Result<(), RuntimeError> {
    let meta = std::fs::symlink_metadata(path).map_err(|source| RuntimeError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if meta.file_type().is_symlink() {
        "it is a symbolic link".to_string()
    } else if !meta.is_dir() {
        "it is not a folder".to_string()
    } else if meta.uid() != 0 && meta.uid() != me {
        format!("it belongs to uid {}", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!("group or others may write it (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(RuntimeError::NotPrivate {
        path: path.to_path_buf(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_busy_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let rt = RuntimeDir::open(&dir.path().join("run")).unwrap();
        let held = rt.lock().unwrap();
        let err = rt.lock().err().unwrap();
        assert!(
            matches!(err, RuntimeError::Busy { pid: Some(p) } if p == std::process::id()),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("busy: another snapshot is in progress"));
        drop(held);
        rt.lock().unwrap();
    }

    /// As the attacker: a runtime folder someone else made first, or a link to one.
    #[test]
    fn a_runtime_directory_others_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = RuntimeDir::open(&shared).err().unwrap();
        assert!(
            matches!(&err, RuntimeError::NotPrivate { why, .. } if why.contains("mode 1777")),
            "{err}"
        );
        assert!(err.to_string().contains("agent.runtime_dir"), "{err}");

        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let err = RuntimeDir::open(&link).err().unwrap();
        assert!(
            matches!(&err, RuntimeError::NotPrivate { why, .. } if why.contains("link")),
            "{err}"
        );
        RuntimeDir::open(&private).unwrap();

        // recover reads nothing from a folder others may write, and a missing one holds nothing.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt
            .block_on(recover(&shared, None, std::time::Duration::from_secs(1)))
            .err()
            .unwrap();
        assert!(err.to_string().contains("mode 1777"), "{err}");
        let none = rt
            .block_on(recover(
                &dir.path().join("none"),
                None,
                std::time::Duration::from_secs(1),
            ))
            .unwrap();
        assert!(none.filesystems.is_empty() && none.resumes.is_empty());
    }
}
