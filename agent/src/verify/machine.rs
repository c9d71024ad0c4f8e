//! `freezeframe-agent verify` on a machine restored from a snapshot (a restore drill's
//! Droplet): the probe's markers on its mounted filesystems say when the platform read its
//! disk, and each restored volume named with `--volume` (attached, not mounted) is checked as an
//! image, databases and all. The boot has replayed the journals already, so they tell nothing
//! here; the markers do.

use super::{
    probe_reason, read_markers, verdict, verify_image, ImageVerification, ProbeVerdict, VerifyError,
};
use crate::freeze::mountinfo;
use crate::transaction::ports::Consistency;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One mounted filesystem's markers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountedFilesystem {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Its type.
    pub fstype: String,
    /// The markers found on it, as `snapshot.moment`.
    pub markers: Vec<String>,
}

/// A restored volume, checked as an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeVerification {
    /// Its name (the device is `scsi-0DO_Volume_<name>` under `digitalocean.volume_links`).
    pub name: String,
    /// What checking its device found.
    pub found: ImageVerification,
}

/// Everything `verify` found on a restored machine, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineVerification {
    /// When the platform read the machine's disk, by the markers on its filesystems.
    pub probe: ProbeVerdict,
    /// The consistency the snapshot was taken as, from its `before` marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Consistency>,
    /// The filesystems looked at.
    pub filesystems: Vec<MountedFilesystem>,
    /// The restored volumes, each checked as an image.
    #[serde(default)]
    pub volumes: Vec<VolumeVerification>,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Checks this machine: the filesystems mounted at `mountpoints` (those of them that are
/// mounted; every ext4, XFS and btrfs mount when `None`), and each `(name, device)` volume as
/// an image, with `scratch` for the images' work.
pub fn verify_machine(
    mountpoints: Option<&[PathBuf]>,
    volumes: &[(String, PathBuf)],
    scratch: &Path,
) -> Result<MachineVerification, VerifyError> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| VerifyError::Tool(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let mounts = mountinfo::parse(&table).map_err(|e| VerifyError::Tool(e.to_string()))?;
    let mut found = Vec::new();
    let mut claimed = None;
    let mut filesystems = Vec::new();
    for mount in mounts.iter().filter(|m| match mountpoints {
        Some(list) => list.contains(&m.mountpoint),
        None => matches!(m.fstype.as_str(), "ext4" | "xfs" | "btrfs"),
    }) {
        // A mountpoint covered by a later mount is not what this machine sees there.
        if mounts
            .iter()
            .any(|later| later.mountpoint == mount.mountpoint && later.parent_id == mount.mount_id)
        {
            continue;
        }
        let markers = read_markers(&mount.mountpoint);
        claimed = claimed.or(markers.claimed);
        filesystems.push(MountedFilesystem {
            mountpoint: mount.mountpoint.clone(),
            fstype: mount.fstype.clone(),
            markers: markers
                .found
                .iter()
                .map(|(name, moment)| format!("{name}.{}", moment.as_str()))
                .collect(),
        });
        found.extend(markers.found);
    }
    let probe = verdict(&found);
    let mut reasons: Vec<String> = probe_reason(probe, claimed).into_iter().collect();
    let mut checked = Vec::new();
    for (n, (name, device)) in volumes.iter().enumerate() {
        let dir = scratch.join(format!("volume-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| VerifyError::Tool(format!("cannot create {}: {e}", dir.display())))?;
        let image = verify_image(device, &dir)?;
        for reason in &image.reasons {
            reasons.push(format!("volume {name}: {reason}"));
        }
        checked.push(VolumeVerification {
            name: name.clone(),
            found: image,
        });
    }
    Ok(MachineVerification {
        probe,
        claimed,
        filesystems,
        volumes: checked,
        verified: reasons.is_empty(),
        reasons,
    })
}
