//! Expedited RCU grace periods while freezing. FIFREEZE waits for three RCU grace periods (one
//! per freeze level of the superblock), about 10 ms each on a typical kernel, two of them while
//! writers are already blocked. `/sys/kernel/rcu_expedited` makes them take microseconds; the
//! agent sets it for the few milliseconds its FIFREEZE calls take and puts the old value back.
//!
//! The knob is system-wide, so it is flock'ed while changed: a second freeze running at the same
//! time leaves it alone instead of restoring a value the first one set. The thaw guard shares
//! the open file (and so the lock) and restores the value if the agent dies in between.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The sysfs knob.
pub(crate) const KNOB: &str = "/sys/kernel/rcu_expedited";
/// When set to 1, `rcu_normal` overrides `rcu_expedited`.
const NORMAL_KNOB: &str = "/sys/kernel/rcu_normal";

/// The knob, opened and locked, with the value to put back.
#[derive(Debug)]
pub(crate) struct ExpeditedRcu {
    fd: OwnedFd,
    previous: u8,
}

/// Why grace periods are not expedited. Not an error: freezing only takes longer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotExpedited {
    #[error("the kernel already expedites them")]
    Already,
    #[error("rcu_normal = 1 forbids expediting them")]
    Forbidden,
    #[error("another freeze is changing {KNOB} right now")]
    Busy,
    #[error("cannot change {KNOB}: {0}")]
    Unavailable(#[source] nix::Error),
}

impl ExpeditedRcu {
    /// Opens and locks the knob, checking it can be changed. Changes nothing yet.
    pub(crate) fn prepare() -> Result<ExpeditedRcu, NotExpedited> {
        Self::prepare_at(Path::new(KNOB), Path::new(NORMAL_KNOB))
    }

    fn prepare_at(knob: &Path, normal: &Path) -> Result<ExpeditedRcu, NotExpedited> {
        use nix::fcntl::OFlag;
        if read_flag(normal) == Some(b'1') {
            return Err(NotExpedited::Forbidden);
        }
        let fd = nix::fcntl::open(
            knob,
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(NotExpedited::Unavailable)?;
        // The lock belongs to the open file, which the guard shares after its fork; it is
        // released in `restore`, or when every copy of the file is closed.
        // SAFETY: plain flock(2) on a descriptor owned here.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(match nix::Error::last() {
                nix::Error::EWOULDBLOCK => NotExpedited::Busy,
                e => NotExpedited::Unavailable(e),
            });
        }
        let mut buf = [0u8; 8];
        let n = nix::sys::uio::pread(&fd, &mut buf, 0).map_err(NotExpedited::Unavailable)?;
        match buf[..n].first() {
            Some(b'0') => Ok(ExpeditedRcu { fd, previous: b'0' }),
            Some(_) => Err(NotExpedited::Already),
            None => Err(NotExpedited::Unavailable(nix::Error::EINVAL)),
        }
    }

    /// Turns expediting on. Errors are ignored: freezing then only takes longer.
    pub(crate) fn expedite(&self) {
        let _ = nix::sys::uio::pwrite(&self.fd, b"1", 0);
    }

    /// Puts the previous value back and releases the lock.
    pub(crate) fn restore(self) {
        let _ = nix::sys::uio::pwrite(&self.fd, &[self.previous], 0);
        // SAFETY: plain flock(2) on a descriptor this value owns.
        unsafe { libc::flock(self.fd.as_raw_fd(), libc::LOCK_UN) };
    }

    /// What the thaw guard needs to restore the value on its own: the shared descriptor and the
    /// byte to write.
    pub(crate) fn for_guard(&self) -> (RawFd, u8) {
        (self.fd.as_raw_fd(), self.previous)
    }
}

fn read_flag(path: &Path) -> Option<u8> {
    std::fs::read(path).ok()?.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_busy_and_restore_puts_the_value_back() {
        let dir = tempfile::tempdir().unwrap();
        let knob = dir.path().join("rcu_expedited");
        std::fs::write(&knob, "0\n").unwrap();
        let normal = dir.path().join("rcu_normal");
        let first = ExpeditedRcu::prepare_at(&knob, &normal).unwrap();
        assert!(matches!(
            ExpeditedRcu::prepare_at(&knob, &normal),
            Err(NotExpedited::Busy)
        ));
        first.expedite();
        assert_eq!(std::fs::read(&knob).unwrap()[0], b'1');
        first.restore();
        assert_eq!(std::fs::read(&knob).unwrap()[0], b'0');
        // Released: the next freeze may take it.
        ExpeditedRcu::prepare_at(&knob, &normal).unwrap().restore();
    }

    #[test]
    fn expedited_already_or_forbidden_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let knob = dir.path().join("rcu_expedited");
        let normal = dir.path().join("rcu_normal");
        std::fs::write(&knob, "1\n").unwrap();
        assert!(matches!(
            ExpeditedRcu::prepare_at(&knob, &normal),
            Err(NotExpedited::Already)
        ));
        std::fs::write(&knob, "0\n").unwrap();
        std::fs::write(&normal, "1\n").unwrap();
        assert!(matches!(
            ExpeditedRcu::prepare_at(&knob, &normal),
            Err(NotExpedited::Forbidden)
        ));
        assert!(matches!(
            ExpeditedRcu::prepare_at(&dir.path().join("missing"), &dir.path().join("none")),
            Err(NotExpedited::Unavailable(nix::Error::ENOENT))
        ));
    }
}
