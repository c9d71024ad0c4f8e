//! The filesystems as reports and plans name them: a target to freeze, a mount left alone and
//! why, and what the thaw guard did on its own.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A block or anonymous device number, as `major:minor` in mountinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DevNum {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl DevNum {
    /// Splits a `st_dev`/`st_rdev` value.
    pub fn from_raw(dev: u64) -> Self {
        DevNum {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A filesystem to freeze, reached through one of its mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Where it is reached.
    pub mountpoint: PathBuf,
    /// The mount's id, checked again when the mountpoint is opened.
    pub mount_id: u64,
    /// `st_dev` of its files.
    pub dev: DevNum,
    /// Its type, such as `ext4`.
    pub fstype: String,
    /// The device (or other source) named in mountinfo.
    pub source: String,
    /// Other mounts of the same filesystem (bind mounts, subvolumes): frozen with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_mounted_at: Vec<PathBuf>,
}

/// Why a mount is not frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A pseudo filesystem (proc, sysfs, …): no data on disk.
    Pseudo,
    /// tmpfs or ramfs.
    MemoryBacked,
    /// overlayfs: its layers are frozen instead.
    Overlay,
    /// A FUSE filesystem.
    Fuse,
    /// A network filesystem.
    Network,
    /// Read-only: nothing to flush.
    ReadOnly,
    /// Not backed by a block device.
    NoBlockDevice,
    /// In `freeze.exclude`.
    Excluded,
    /// Another mount of a filesystem frozen through this path.
    SameFilesystemAs(PathBuf),
    /// Mounted over by a later mount at the same path.
    Hidden,
    /// The filesystem answered FIFREEZE with EOPNOTSUPP.
    FreezeNotSupported,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Pseudo => write!(f, "pseudo filesystem (no data on disk)"),
            SkipReason::MemoryBacked => write!(f, "memory-backed (tmpfs/ramfs): not part of a disk snapshot"),
            SkipReason::Overlay => write!(f, "overlay: its upper and lower filesystems are frozen instead"),
            SkipReason::Fuse => write!(f, "FUSE filesystem: cannot be frozen"),
            SkipReason::Network => write!(f, "network filesystem: not part of this machine's disks"),
            SkipReason::ReadOnly => write!(f, "read-only filesystem: nothing to flush"),
            SkipReason::NoBlockDevice => write!(f, "not backed by a block device"),
            SkipReason::Excluded => write!(f, "excluded by `freeze.exclude`"),
            SkipReason::SameFilesystemAs(p) => write!(f, "same filesystem as {} (frozen once)", p.display()),
            SkipReason::Hidden => write!(f, "hidden under a later mount at the same path"),
            SkipReason::FreezeNotSupported => {
                write!(f, "the filesystem does not support freezing (EOPNOTSUPP)")
            }
        }
    }
}

impl Serialize for SkipReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A skip reason in words that no [`SkipReason`] writes (a report from another version, or
/// edited by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSkipReason(pub String);

impl std::fmt::Display for UnknownSkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown skip reason `{}`", self.0)
    }
}

impl std::error::Error for UnknownSkipReason {}

impl std::str::FromStr for SkipReason {
    type Err = UnknownSkipReason;

    /// Reads back what `Display` wrote (reports are JSON with the reason in words).
    fn from_str(text: &str) -> Result<Self, UnknownSkipReason> {
        const PLAIN: [SkipReason; 10] = [
            SkipReason::Pseudo,
            SkipReason::MemoryBacked,
            SkipReason::Overlay,
            SkipReason::Fuse,
            SkipReason::Network,
            SkipReason::ReadOnly,
            SkipReason::NoBlockDevice,
            SkipReason::Excluded,
            SkipReason::Hidden,
            SkipReason::FreezeNotSupported,
        ];
        if let Some(reason) = PLAIN.into_iter().find(|r| r.to_string() == text) {
            return Ok(reason);
        }
        text.strip_prefix("same filesystem as ")
            .and_then(|rest| rest.strip_suffix(" (frozen once)"))
            .map(|path| SkipReason::SameFilesystemAs(PathBuf::from(path)))
            .ok_or_else(|| UnknownSkipReason(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for SkipReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A mount that is not frozen, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its type.
    pub fstype: String,
    /// Why it is not frozen.
    pub reason: SkipReason,
}

/// What the guard did on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardEvent {
    /// The deadline passed: the guard thawed every target.
    DeadlineThawed,
    /// The guard process is gone (killed): nothing guards the freeze any more.
    Died,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_read_back_and_an_unknown_one_is_named() {
        for reason in [
            SkipReason::Overlay,
            SkipReason::SameFilesystemAs(PathBuf::from("/srv")),
        ] {
            assert_eq!(reason.to_string().parse::<SkipReason>(), Ok(reason));
        }
        let err = "mounted on a whim".parse::<SkipReason>().unwrap_err();
        assert_eq!(err, UnknownSkipReason("mounted on a whim".into()));
        assert_eq!(err.to_string(), "unknown skip reason `mounted on a whim`");
    }
}
