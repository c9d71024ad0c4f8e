//! Whole disks: an image or device with a partition table (a Droplet's disk has one: its root
//! filesystem, and small boot partitions). The table is read in user space (`partx`: kernels
//! built without a table type's parser cannot scan it), each partition attached to a read-only
//! loop device of its own at its offset, and each that holds ext4, XFS or btrfs verified as an
//! image of its own; the others (EFI, BIOS boot, swap) are listed, not checked.

use super::evidence::Evidence;
use super::sandbox::{ToolBox, IMAGE};
use super::{
    run, run_on, verify_image, DatabaseCheck, ImageVerification, JournalState, ProbeVerdict, VerifyError,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionVerification {
    /// Its number in the table (1 for `p1`).
    pub number: u32,
    /// What blkid finds in it (empty: nothing it knows).
    pub fstype: String,
    /// What verifying it found; none for a partition without ext4, XFS or btrfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<ImageVerification>,
}

/// Everything `verify --image` found on a partitioned disk, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskVerification {
    /// The image or device checked.
    pub image: PathBuf,
    /// Its partition table, as blkid names it (`gpt`, `dos`).
    pub partition_table: String,
    /// Every partition, in order.
    pub partitions: Vec<PartitionVerification>,
    /// When the platform read the disk, by the markers and journals of its partitions.
    pub probe: ProbeVerdict,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check, each naming its partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// What checking an image or device found: a disk's partitions, or one filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Findings {
    /// A whole disk, through its partition table.
    Disk(DiskVerification),
    /// One filesystem.
    Filesystem(ImageVerification),
}

impl Findings {
    /// Every check passed.
    pub fn verified(&self) -> bool {
        match self {
            Findings::Disk(d) => d.verified,
            Findings::Filesystem(f) => f.verified,
        }
    }

    /// Why not, one line per failed check.
    pub fn reasons(&self) -> &[String] {
        match self {
            Findings::Disk(d) => &d.reasons,
            Findings::Filesystem(f) => &f.reasons,
        }
    }

    /// Every database found and checked.
    pub fn databases(&self) -> Vec<&DatabaseCheck> {
        match self {
            Findings::Disk(d) => d
                .partitions
                .iter()
                .filter_map(|p| p.found.as_ref())
                .flat_map(|f| &f.databases)
                .collect(),
            Findings::Filesystem(f) => f.databases.iter().collect(),
        }
    }
}

/// Checks `image`: through its partition table when it has one, else as one filesystem.
pub fn verify_any(image: &Path, scratch: &Path) -> Result<Findings, VerifyError> {
    std::fs::File::open(image).map_err(|e| VerifyError::Unreadable {
        path: image.to_path_buf(),
        problem: e.to_string(),
    })?;
    // The tools that parse the image run in a sandbox, reading it through a device of theirs.
    let tools = ToolBox::new(image, &scratch.join("stage")).map_err(|e| VerifyError::Tool(e.to_string()))?;
    match partition_table(&tools)? {
        Some(table) => Ok(Findings::Disk(verify_disk(image, &tools, &table, scratch)?)),
        None => {
            drop(tools);
            Ok(Findings::Filesystem(verify_image(image, scratch)?))
        }
    }
}

/// The partition table of the image in `tools`, if it has one.
fn partition_table(tools: &ToolBox) -> Result<Option<String>, VerifyError> {
    let (_, found) = run_on(tools, "blkid", &["-p", "-o", "value", "-s", "PTTYPE", IMAGE])?;
    let found = found.trim();
    Ok((!found.is_empty()).then(|| found.to_string()))
}

/// Verifies each partition of `image` (which has the partition table `table`) that holds a
/// filesystem verify knows, with `scratch` for the work.
fn verify_disk(
    image: &Path,
    tools: &ToolBox,
    table: &str,
    scratch: &Path,
) -> Result<DiskVerification, VerifyError> {
    let mut partitions = Vec::new();
    for (number, offset, size) in table_entries(tools, image)? {
        let part = PartitionLoop::attach(image, offset, size)?;
        let device = PathBuf::from(&part.device);
        let part_tools =
            ToolBox::new(&device, &scratch.join("stage")).map_err(|e| VerifyError::Tool(e.to_string()))?;
        let (_, fstype) = run_on(&part_tools, "blkid", &["-p", "-o", "value", "-s", "TYPE", IMAGE])?;
        drop(part_tools);
        let fstype = fstype.trim().to_string();
        let found = if matches!(fstype.as_str(), "ext4" | "xfs" | "btrfs") {
            let dir = scratch.join(format!("partition-{number}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| VerifyError::Tool(format!("cannot create {}: {e}", dir.display())))?;
            Some(verify_image(&device, &dir)?)
        } else {
            None
        };
        drop(part);
        partitions.push(PartitionVerification {
            number,
            fstype,
            found,
        });
    }
    let checked: Vec<(u32, &ImageVerification)> = partitions
        .iter()
        .filter_map(|p| Some((p.number, p.found.as_ref()?)))
        .collect();
    if checked.is_empty() {
        return Err(VerifyError::UnknownFilesystem {
            path: image.to_path_buf(),
            found: format!("a {table} partition table, and no partition with ext4, xfs or btrfs"),
        });
    }
    let probe = disk_verdict(checked.iter().map(|(_, found)| found.probe));
    // A partition without markers (one the snapshot did not freeze, such as /boot) does not
    // fail a disk whose other partitions tell when it was read.
    let unmarked = Evidence {
        markers: &[],
        journal: JournalState::NotTold,
        after_logged: false,
    }
    .reason(None);
    let reasons: Vec<String> = checked
        .iter()
        .flat_map(|(number, found)| {
            found
                .reasons
                .iter()
                .filter(|r| probe == ProbeVerdict::NoMarkers || Some(*r) != unmarked.as_ref())
                .map(move |r| format!("partition {number}: {r}"))
        })
        .collect();
    Ok(DiskVerification {
        image: image.to_path_buf(),
        partition_table: table.to_string(),
        partitions,
        probe,
        verified: reasons.is_empty(),
        reasons,
    })
}

/// A disk's verdict: any partition read after the thaw makes it so; else any read inside the
/// window; else no markers at all.
fn disk_verdict(verdicts: impl Iterator<Item = ProbeVerdict>) -> ProbeVerdict {
    verdicts.fold(ProbeVerdict::NoMarkers, |disk, partition| {
        match (disk, partition) {
            (ProbeVerdict::AfterThaw, _) | (_, ProbeVerdict::AfterThaw) => ProbeVerdict::AfterThaw,
            (ProbeVerdict::InsideWindow, _) | (_, ProbeVerdict::InsideWindow) => ProbeVerdict::InsideWindow,
            _ => ProbeVerdict::NoMarkers,
        }
    })
}

/// The partitions of `image`'s table: number, first byte, length in bytes.
fn table_entries(tools: &ToolBox, image: &Path) -> Result<Vec<(u32, u64, u64)>, VerifyError> {
    let args = [
        "--raw",
        "--noheadings",
        "--bytes",
        "--output",
        "NR,START,SIZE",
        IMAGE,
    ];
    let (ok, text) = run_on(tools, "partx", &args)?;
    if !ok {
        return Err(VerifyError::Tool(format!(
            "cannot read the partition table of {}: {}",
            image.display(),
            text.trim()
        )));
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u64>);
            let (number, start, size) = (fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?);
            // partx gives the start in 512-byte sectors.
            Some((u32::try_from(number).ok()?, start * 512, size))
        })
        .collect())
}

/// The output of `program`, which must succeed; otherwise an error saying it could not `what`.
fn succeeded(program: &str, args: &[&str], what: impl FnOnce() -> String) -> Result<String, VerifyError> {
    let (ok, text) = run(program, args)?;
    if !ok {
        return Err(VerifyError::Tool(format!("cannot {}: {}", what(), text.trim())));
    }
    Ok(text)
}

/// One partition on a read-only loop device of its own; detached on drop.
struct PartitionLoop {
    device: String,
}

impl PartitionLoop {
    fn attach(image: &Path, offset: u64, size: u64) -> Result<PartitionLoop, VerifyError> {
        let text = succeeded(
            "losetup",
            &[
                "--find",
                "--show",
                "--read-only",
                "--offset",
                &offset.to_string(),
                "--sizelimit",
                &size.to_string(),
                &image.to_string_lossy(),
            ],
            || format!("attach a partition of {} to a loop device", image.display()),
        )?;
        Ok(PartitionLoop {
            device: text.trim().to_string(),
        })
    }
}

impl Drop for PartitionLoop {
    fn drop(&mut self) {
        let _ = run("losetup", &["--detach", &self.device]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_read_after_the_thaw_if_any_partition_was() {
        use ProbeVerdict::*;
        assert_eq!(disk_verdict([NoMarkers, InsideWindow].into_iter()), InsideWindow);
        assert_eq!(disk_verdict([InsideWindow, AfterThaw].into_iter()), AfterThaw);
        assert_eq!(disk_verdict([NoMarkers].into_iter()), NoMarkers);
    }
}
