//! The kernel's view of a mounted filesystem's health, for a restored machine: the errors it
//! recorded since the filesystem was made or last checked. ext4 keeps its error count and its
//! first and last error in the superblock and shows them in `/sys/fs/ext4/<dev>/`
//! (Documentation/ABI/testing/sysfs-fs-ext4); btrfs counts each device's I/O, corruption and
//! generation errors, shown in `/sys/fs/btrfs/<fsid>/devinfo/<id>/error_stats` since Linux
//! 5.14 (`btrfs device stats` reads the same counters by ioctl); XFS keeps no count, but one the
//! kernel shut down after an error answers every read with EIO.

use super::FilesystemHealth;
use crate::kernel::mountinfo::Mount;
use std::path::Path;

/// The health of `mount` as the kernel under `sys` (`/sys`) records it; none where it records
/// nothing to read (a type other than ext4, XFS and btrfs, or btrfs before 5.14).
pub(crate) fn health(mount: &Mount, sys: &Path) -> Option<FilesystemHealth> {
    match mount.fstype.as_str() {
        "ext4" => Some(ext4(mount, sys)),
        "btrfs" => btrfs(mount, sys),
        "xfs" => Some(xfs(mount)),
        _ => None,
    }
}

/// The kernel's name for the block device `dev` (`loop0`, `vda1`, `dm-0`): ext4's folder name.
fn block_name(sys: &Path, major: u32, minor: u32) -> Option<String> {
    let link = std::fs::read_link(sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// ext4's `errors_count`, and its first and last error (when, in which function) when it has any.
fn ext4(mount: &Mount, sys: &Path) -> FilesystemHealth {
    let Some(name) = block_name(sys, mount.dev.major, mount.dev.minor) else {
        return unreadable(
            format!(
                "{}/dev/block/{}:{}",
                sys.display(),
                mount.dev.major,
                mount.dev.minor
            ),
            "no such block device",
        );
    };
    let folder = sys.join("fs/ext4").join(&name);
    let read = |file: &str| std::fs::read_to_string(folder.join(file)).map(|s| s.trim().to_string());
    let source = folder.display().to_string();
    let count = match read("errors_count").map(|c| c.parse::<u64>()) {
        Ok(Ok(count)) => count,
        Ok(Err(e)) => return unreadable(source, &format!("errors_count: {e}")),
        Err(e) => return unreadable(source, &format!("errors_count: {e}")),
    };
    let mut problems = Vec::new();
    if count > 0 {
        let mut line = format!("the kernel recorded {count} error{}", plural(count));
        for (which, prefix) in [("first", "first_error"), ("last", "last_error")] {
            let time = read(&format!("{prefix}_time")).unwrap_or_default();
            let func = read(&format!("{prefix}_func")).unwrap_or_default();
            if time.parse::<u64>().is_ok_and(|t| t > 0) {
                line.push_str(&format!("; the {which} at {time} (Unix time) in {func}"));
            }
        }
        line.push_str(" (e2fsck clears the record once it has repaired the filesystem)");
        problems.push(line);
    }
    FilesystemHealth {
        source,
        errors: Some(count),
        problems,
    }
}

/// btrfs's error counters of every device of the filesystem on `mount`'s source device.
fn btrfs(mount: &Mount, sys: &Path) -> Option<FilesystemHealth> {
    let device = std::fs::metadata(&mount.source).ok()?;
    let rdev = std::os::unix::fs::MetadataExt::rdev(&device);
    let name = block_name(sys, libc::major(rdev), libc::minor(rdev))?;
    let fsid = std::fs::read_dir(sys.join("fs/btrfs"))
        .ok()?
        .filter_map(Result::ok)
        .find(|fs| fs.path().join("devices").join(&name).exists())?
        .path();
    let mut errors = 0;
    let mut problems = Vec::new();
    let mut told = false;
    for device in std::fs::read_dir(fsid.join("devinfo"))
        .ok()?
        .filter_map(Result::ok)
    {
        let Ok(stats) = std::fs::read_to_string(device.path().join("error_stats")) else {
            continue;
        };
        told = true;
        for (counter, value) in stats.lines().filter_map(|l| l.split_once(' ')) {
            let value: u64 = value.trim().parse().unwrap_or(0);
            errors += value;
            if value > 0 {
                problems.push(format!(
                    "device {}: {value} {counter} (`btrfs device stats --reset` clears them once repaired)",
                    device.file_name().to_string_lossy()
                ));
            }
        }
    }
    told.then(|| FilesystemHealth {
        source: fsid.join("devinfo").display().to_string(),
        errors: Some(errors),
        problems,
    })
}

/// XFS shut down: reading its top folder answers EIO.
fn xfs(mount: &Mount) -> FilesystemHealth {
    let source = format!("reading {}", mount.mountpoint.display());
    let problems = match read_top(&mount.mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => vec![format!(
            "the kernel shut it down after an error: reading it answers EIO ({e}); \
             xfs_repair it unmounted"
        )],
        Err(e) => vec![format!("cannot read it: {e}")],
        Ok(()) => Vec::new(),
    };
    FilesystemHealth {
        source,
        errors: None,
        problems,
    }
}

/// Reads the first entry of the folder at `mountpoint`, opened without following a link.
fn read_top(mountpoint: &Path) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path; the returned descriptor is checked and owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The folder opened, read through its descriptor.
    let mut entries = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    entries.next().transpose().map(|_| ())
}

/// The kernel's view could not be read: a problem, since nothing then says it is sound.
fn unreadable(source: String, why: &str) -> FilesystemHealth {
    FilesystemHealth {
        problems: vec![format!("cannot read the kernel's record of its errors: {why}")],
        source,
        errors: None,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use freezeframe_contract::DevNum;
    use std::path::PathBuf;

    fn mount(fstype: &str, dev: DevNum) -> Mount {
        Mount {
            mount_id: 1,
            parent_id: 0,
            dev,
            root: PathBuf::from("/"),
            mountpoint: PathBuf::from("/srv"),
            mount_options: "rw".into(),
            fstype: fstype.into(),
            source: "/dev/vdb1".into(),
            super_options: "rw".into(),
        }
    }

    /// A sysfs of ext4 `vdb1` (device 254:17) whose superblock counts `count` errors.
    fn ext4_sys(count: &str) -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/virtio5/block/vdb/vdb1",
            sys.path().join("dev/block/254:17"),
        )
        .unwrap();
        let ext4 = sys.path().join("fs/ext4/vdb1");
        std::fs::create_dir_all(&ext4).unwrap();
        for (file, text) in [
            ("errors_count", count),
            ("first_error_time", "1796694009\n"),
            ("first_error_func", "ext4_lookup\n"),
            ("last_error_time", "0\n"),
            ("last_error_func", "\n"),
        ] {
            std::fs::write(ext4.join(file), text).unwrap();
        }
        sys
    }

    #[test]
    fn ext4_errors_are_counted_and_said_and_a_clean_one_passes() {
        let dev = DevNum {
            major: 254,
            minor: 17,
        };
        let sys = ext4_sys("2\n");
        let found = health(&mount("ext4", dev), sys.path()).unwrap();
        assert_eq!(found.errors, Some(2));
        assert!(!found.healthy());
        assert!(
            found.problems[0]
                .contains("recorded 2 errors; the first at 1796694009 (Unix time) in ext4_lookup")
                && !found.problems[0].contains("the last"),
            "{found:?}"
        );
        assert!(found.source.ends_with("fs/ext4/vdb1"), "{found:?}");
        let sys = ext4_sys("0\n");
        let found = health(&mount("ext4", dev), sys.path()).unwrap();
        assert_eq!((found.errors, found.healthy()), (Some(0), true), "{found:?}");
    }

    #[test]
    fn an_ext4_record_that_cannot_be_read_is_no_pass() {
        let sys = tempfile::tempdir().unwrap();
        let found = health(
            &mount(
                "ext4",
                DevNum {
                    major: 254,
                    minor: 17,
                },
            ),
            sys.path(),
        )
        .unwrap();
        assert!(!found.healthy(), "{found:?}");
        assert!(health(&mount("vfat", DevNum { major: 8, minor: 1 }), sys.path()).is_none());
    }
}
