//! The system calls behind freezing: FIFREEZE/FITHAW, syncfs, opening mountpoints and checking
//! that a descriptor still leads to the planned mount.

use crate::transaction::ports::DevNum;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

// FIFREEZE and FITHAW are `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` (linux/fs.h).
nix::ioctl_readwrite!(
    /// FIFREEZE on a descriptor of the filesystem's mountpoint.
    fifreeze,
    b'X',
    119,
    libc::c_int
);
nix::ioctl_readwrite!(
    /// FITHAW on a descriptor of the filesystem's mountpoint.
    fithaw,
    b'X',
    120,
    libc::c_int
);
// BLKGETSIZE64 is `_IOR(0x12, 114, size_t)` (linux/fs.h).
nix::ioctl_read!(
    /// BLKGETSIZE64: a block device's size in bytes.
    blkgetsize64,
    0x12,
    114,
    u64
);

/// Opens a mountpoint read-only, without updating its access time, close-on-exec.
pub fn open_mountpoint(path: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(path, flags | OFlag::O_NOATIME, nix::sys::stat::Mode::empty()) {
        // O_NOATIME needs ownership or CAP_FOWNER; fall back rather than fail.
        Err(nix::Error::EPERM) => nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()),
        other => other,
    }
}

/// Freezes the filesystem behind `fd`.
pub(crate) fn freeze(fd: &OwnedFd) -> nix::Result<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor; FIFREEZE ignores its int argument, valid for the call.
    unsafe { fifreeze(fd.as_raw_fd(), &mut arg) }.map(drop)
}

/// Thaws the filesystem behind `fd`. EINVAL means it was not frozen.
pub(crate) fn thaw(fd: &OwnedFd) -> nix::Result<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: `fd` is an open descriptor; FITHAW ignores its int argument, valid for the call.
    unsafe { fithaw(fd.as_raw_fd(), &mut arg) }.map(drop)
}

/// The mount a descriptor belongs to (`mnt_id` in /proc/self/fdinfo), to detect a mountpoint
/// that now leads somewhere else.
pub(crate) fn mount_id_of(fd: &OwnedFd) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no mnt_id in fdinfo"))
}

/// `st_dev` of what `fd` refers to.
pub(crate) fn dev_of(fd: &OwnedFd) -> nix::Result<DevNum> {
    nix::sys::stat::fstat(fd).map(|st| DevNum::from_raw(st.st_dev))
}

/// The size of a block device in bytes.
pub(crate) fn block_device_size(fd: &OwnedFd) -> nix::Result<u64> {
    let mut size = 0u64;
    // SAFETY: `fd` is an open descriptor and `size` a valid u64 for the kernel to fill.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Whether this process may freeze filesystems (CAP_SYS_ADMIN in its effective set).
pub(crate) fn can_freeze() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}
