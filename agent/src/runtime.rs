//! The runtime directory (`/run/freezeframe` by default, on tmpfs): the lock that lets only one
//! transaction run at a time, and the record of what is frozen.

use crate::guard::record::{self, ThawOutcome};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot use the runtime directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("busy: another snapshot is in progress on this machine{}; wait for it to finish", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { pid: Option<u32> },
}

pub struct RuntimeDir {
    path: PathBuf,
}

/// Held while a transaction runs. The thaw guard inherits it, so a new transaction cannot start
/// while an old guard still holds filesystems.
pub struct TransactionLock {
    _lock: Flock<File>,
}

impl RuntimeDir {
    /// Creates the directory (mode 0700) if needed.
    pub fn open(path: &Path) -> Result<Self, RuntimeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| RuntimeError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(RuntimeDir {
            path: path.to_path_buf(),
        })
    }

    pub fn record_path(&self) -> PathBuf {
        self.path.join(record::RECORD_FILE)
    }

    /// Takes the transaction lock, or says who holds it.
    pub fn lock(&self) -> Result<TransactionLock, RuntimeError> {
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
            .custom_flags(libc::O_CLOEXEC)
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

    /// With the lock held: thaws what a dead agent left frozen, as its record lists, and
    /// removes the record. Returns what was done, if there was a record.
    pub fn recover(&self, _lock: &TransactionLock) -> std::io::Result<Option<Vec<(PathBuf, ThawOutcome)>>> {
        let path = self.record_path();
        let Some(rec) = record::read(&path)? else {
            return Ok(None);
        };
        let outcomes = record::thaw_recorded(&rec);
        record::remove(&path)?;
        Ok(Some(outcomes))
    }
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
}
