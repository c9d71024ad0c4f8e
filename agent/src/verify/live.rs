//! What `verify` refuses because it is live, not a snapshot's copy: an image or device that is
//! mounted here (directly, through a partition, or as the file behind a mounted loop device),
//! and, without `--image`, the machine that took the snapshot, still in the boot that took it
//! (its markers carry this boot's id; a restored machine has always booted since). What either
//! would show says nothing of when the platform read a snapshot.

use super::VerifyError;
use crate::freeze::probe;
use crate::kernel::mountinfo;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Refuses `image` when it, or what it holds, is mounted on this machine.
pub(super) fn refuse_mounted(image: &Path) -> Result<(), VerifyError> {
    // Unreadable images are said so by the caller, with its own words.
    let Ok(meta) = std::fs::metadata(image) else {
        return Ok(());
    };
    let devices: Vec<u64> = if meta.file_type().is_block_device() {
        with_partitions(meta.rdev())
    } else if meta.file_type().is_file() {
        loop_devices_of(meta.dev(), meta.ino())
            .into_iter()
            .flat_map(with_partitions)
            .collect()
    } else {
        Vec::new()
    };
    if devices.is_empty() {
        return Ok(());
    }
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let Ok(mounts) = mountinfo::parse(&table) else {
        return Ok(());
    };
    // By the device behind the source, not st_dev: a btrfs mount's is an anonymous one.
    let mounted = mounts.iter().find(|m| {
        m.source.starts_with("/dev/")
            && std::fs::metadata(&m.source)
                .is_ok_and(|s| s.file_type().is_block_device() && devices.contains(&s.rdev()))
    });
    match mounted {
        Some(mount) => Err(VerifyError::Mounted {
            path: image.to_path_buf(),
            mountpoint: mount.mountpoint.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses this machine as a restored one when the markers at `mountpoint` were written in
/// the boot it runs now (`boot_id` is theirs).
pub(super) fn refuse_own_boot(
    boot_id: Option<&str>,
    snapshot: Option<&str>,
    mountpoint: &Path,
) -> Result<(), VerifyError> {
    match (boot_id, probe::boot_id()) {
        (Some(theirs), Some(ours)) if theirs == ours => Err(VerifyError::LiveMachine {
            snapshot: snapshot.unwrap_or_default().to_string(),
            mountpoint: mountpoint.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// The block device `dev` and its partitions' (`/sys/dev/block/M:m/<partition>/dev`).
fn with_partitions(dev: u64) -> Vec<u64> {
    let mut all = vec![dev];
    let dir = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    ));
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.join("partition").exists() {
            if let Some(number) = read_dev(&path.join("dev")) {
                all.push(number);
            }
        }
    }
    all
}

/// The loop devices whose backing file is the file (`dev`, `ino`).
fn loop_devices_of(dev: u64, ino: u64) -> Vec<u64> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(backing) = std::fs::read_to_string(path.join("loop/backing_file")) else {
            continue;
        };
        let same =
            std::fs::metadata(backing.trim_end_matches('\n')).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
        if same {
            found.extend(read_dev(&path.join("dev")));
        }
    }
    found
}

/// A sysfs `dev` file (`major:minor`) as a device number.
fn read_dev(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let (major, minor) = text.trim().split_once(':')?;
    Some(nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?))
}
