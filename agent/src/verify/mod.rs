//! `freezeframe-agent verify`: what a snapshot proves, without changing a byte of it. On an
//! image (`verify_image`), which may come from a compromised machine and is read as hostile
//! data (inside.rs, sandbox.rs): when the platform read it (evidence.rs: the probe's markers,
//! the journal's state, what ext4's log holds), the filesystem checker, read-only, and every
//! database found in it (databases.rs), started from a copy-on-write overlay on the view
//! (sandbox.rs: as an identity that owns nothing here, in a sandbox), recovered as a restore
//! would, checked and stopped (postgres.rs, mariadb.rs, redis.rs; server.rs runs them);
//! PostgreSQL's recovery must reach the WAL position its quiescer recorded in the `before`
//! marker. A whole disk goes through its partition table (disk.rs); a restored machine is
//! checked as it runs (machine.rs).
//!
//! An ext4 or btrfs image with a clean (or torn) journal is attached to a read-only loop device
//! and mounted without replay (a cloned btrfs mounts beside its original on kernels with temp-fsid,
//! 6.7 and later). Any other image (a journal that needs recovery, any XFS) is read from a
//! private sparse copy whose log the mount replays, as a restore would. Nothing is mounted
//! outside the caller's private mount namespace.

mod databases;
mod disk;
mod evidence;
mod health;
mod inside;
mod live;
mod machine;
mod mariadb;
mod namespace;
mod postgres;
mod redis;
mod sandbox;
mod server;

pub(crate) use disk::verify_any;
pub(crate) use freezeframe_contract::verification::{
    DatabaseCheck, DatabaseKind, DiskVerification, FilesystemHealth, Findings, ImageVerification,
    JournalState, MachineVerification, MountedFilesystem, PartitionVerification, ProbeVerdict, TableRows,
    VolumeVerification,
};
pub(crate) use machine::verify_machine;
pub(crate) use namespace::enter_private_mounts;

use crate::loop_mount::{Attach, LoopMount};
use crate::transaction::ports::{Consistency, LogPosition};
use evidence::{journal_holds_after, journal_state, read_markers, Evidence, Markers};
use inside::Root;
use sandbox::{Confined, ToolBox, IMAGE};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an image could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The path is not a readable image or block device.
    #[error("cannot read {path}: {problem}")]
    Unreadable {
        /// The image as given.
        path: PathBuf,
        /// What failed.
        problem: String,
    },
    /// No filesystem this command knows is in it.
    #[error("{path} holds no ext4, xfs or btrfs filesystem ({found}); give the image or device of a filesystem, or of a disk whose partitions hold them")]
    UnknownFilesystem {
        /// The image as given.
        path: PathBuf,
        /// What blkid said.
        found: String,
    },
    /// A tool it needs failed.
    #[error("{0}")]
    Tool(String),
    /// A folder was given: a local-image snapshot's, say, which holds one image per filesystem.
    #[error(
        "{} is a folder, not an image{}",
        .path.display(),
        match .images.first() {
            Some(first) => format!(
                "; it holds {}: give one of them, such as --image {}",
                .images.iter().map(|i| i.display().to_string()).collect::<Vec<_>>().join(", "),
                .path.join(first).display()
            ),
            None => "; give the image file of a filesystem, or a block device".to_string(),
        }
    )]
    Folder {
        /// The folder as given.
        path: PathBuf,
        /// The images in it (`*.img`), by file name.
        images: Vec<PathBuf>,
    },
    /// The image or device is mounted here: a live filesystem, not a snapshot's copy.
    #[error(
        "{} is mounted at {}: a live filesystem, not a copy restored from a snapshot, so it says \
         nothing of when a snapshot was read; give the image or device of a restored copy that \
         is not mounted",
        .path.display(),
        .mountpoint.display()
    )]
    Mounted {
        /// The image as given.
        path: PathBuf,
        /// Where it (or a partition of it, or the loop device it backs) is mounted.
        mountpoint: PathBuf,
    },
    /// Without `--image`: this is the machine the snapshot was taken on, in the same boot.
    #[error(
        "this is the machine that took snapshot {snapshot}, still in the boot that took it (the \
         markers on {} carry this boot's id): its filesystems are live, not restored from the \
         snapshot, so they say nothing of when it was read. `verify` without --image checks a \
         machine restored from a snapshot: run `freezeframe verify` (a restore drill), or give \
         --image the image of a restored copy",
        .mountpoint.display()
    )]
    LiveMachine {
        /// The snapshot its markers name.
        snapshot: String,
        /// A filesystem that carries them.
        mountpoint: PathBuf,
    },
}

/// Checks `image` (a file or a block device holding one filesystem); `scratch` is a private
/// folder for mountpoints, the overlay's writes, the databases' sockets and, when the journal
/// needs recovery, a sparse copy. Mounts belong in a namespace of the caller's
/// (`enter_private_mounts`).
pub(crate) fn verify_image(image: &Path, scratch: &Path) -> Result<ImageVerification, VerifyError> {
    std::fs::File::open(image).map_err(|e| VerifyError::Unreadable {
        path: image.to_path_buf(),
        problem: e.to_string(),
    })?;
    // Root's alone: it holds the view of the image, and perhaps a copy of it. The databases'
    // sandboxes reach what they need through mounts of their own.
    std::fs::set_permissions(scratch, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| VerifyError::Tool(format!("cannot open {}: {e}", scratch.display())))?;
    // The tools that parse the image run in a sandbox, reading it through a device of theirs.
    let stage = scratch.join("stage");
    let tools = ToolBox::new(image, &stage).map_err(|e| VerifyError::Tool(e.to_string()))?;
    let fstype = filesystem_type(&tools, image)?;
    let journal = journal_state(&fstype, &tools)?;
    // A torn journal is discarded at mount, as a restore's boot discards it.
    let source = if matches!(journal, JournalState::Clean | JournalState::Torn) {
        Source::Image(image.to_path_buf())
    } else {
        Source::copy_of(image, scratch)?
    };
    let view = LoopMount::attach(
        source.path(),
        &scratch.join("view"),
        Attach {
            read_only: matches!(source, Source::Image(_)),
            // Without replay (noload) when clean; a copy's log is replayed as a restore would
            // (then the mount is made read-only); nouuid: the original may be mounted here
            // under the same UUID. Never a setuid file, a device node or a program from it.
            options: Some(match (&source, fstype.as_str()) {
                (Source::Image(_), "btrfs") => "ro,nosuid,nodev,noexec,rescue=nologreplay",
                (Source::Image(_), _) => "ro,nosuid,nodev,noexec,noload",
                (Source::Copy(_), "xfs") => "nosuid,nodev,noexec,nouuid",
                (Source::Copy(_), _) => "rw,nosuid,nodev,noexec",
            }),
        },
    )
    .map_err(|e| VerifyError::Tool(e.to_string()))?;
    if matches!(source, Source::Copy(_)) {
        read_only(view.mountpoint())?;
    }
    let root = Root::open(view.mountpoint()).map_err(|e| {
        VerifyError::Tool(format!(
            "cannot open the image's view {}: {e}",
            view.mountpoint().display()
        ))
    })?;
    let Markers {
        found: markers,
        record,
        ..
    } = read_markers(&root);
    let claimed = record.as_ref().map(|r| r.consistency);
    let positions = record.map(|r| r.log_positions).unwrap_or_default();
    let databases = check_databases(&root, scratch, &positions);
    drop(root);
    drop(view);
    let (filesystem_ok, filesystem_report) = match &source {
        Source::Image(_) => check_filesystem(&fstype, &tools)?,
        Source::Copy(copy) => check_filesystem(
            &fstype,
            &ToolBox::new(copy, &stage).map_err(|e| VerifyError::Tool(e.to_string()))?,
        )?,
    };
    drop(source);
    let after_logged =
        fstype == "ext4" && journal_holds_after(tools.command("debugfs"), Path::new(IMAGE), &markers);
    drop(tools);
    let evidence = Evidence {
        markers: &markers,
        journal,
        after_logged,
    };
    let probe = evidence.verdict();
    let reasons = reasons(evidence, claimed, &fstype, filesystem_ok, &databases);
    Ok(ImageVerification {
        image: image.to_path_buf(),
        fstype,
        probe,
        markers: markers
            .iter()
            .map(|(name, moment)| format!("{name}.{}", moment.as_str()))
            .collect(),
        claimed,
        journal,
        after_logged,
        filesystem_ok,
        filesystem_report: if filesystem_ok {
            String::new()
        } else {
            filesystem_report
        },
        databases,
        verified: reasons.is_empty(),
        reasons,
    })
}

/// Why the image is not verified, one line per failed check; empty when it is.
fn reasons(
    evidence: Evidence<'_>,
    claimed: Option<Consistency>,
    fstype: &str,
    filesystem_ok: bool,
    databases: &[DatabaseCheck],
) -> Vec<String> {
    let probe = evidence.verdict();
    let mut reasons: Vec<String> = evidence.reason(claimed).into_iter().collect();
    // With markers the journal is part of the probe's verdict; without, a reason of its own.
    match evidence.journal {
        _ if probe == ProbeVerdict::AfterThaw => {}
        JournalState::NeedsRecovery => reasons.push(
            "the journal needs recovery: the filesystem was live, not frozen, when the image was read"
                .to_string(),
        ),
        JournalState::Torn => reasons.push(
            "the superblock is clean but the journal holds transactions: the image was read \
             part-way, partly while the filesystem was live"
                .to_string(),
        ),
        JournalState::Clean | JournalState::NotTold => {}
    }
    if !filesystem_ok {
        reasons.push(format!("the filesystem check failed ({fstype})"));
    }
    for database in databases.iter().filter(|d| !d.ok) {
        reasons.push(format!(
            "{} at {}: {}",
            database.kind.label(),
            database.path.display(),
            database.problems.join("; ")
        ));
    }
    reasons
}

/// Makes the mount at `path` read-only, `nosuid,nodev,noexec` (a copy's view, once its log is
/// replayed).
fn read_only(path: &Path) -> Result<(), VerifyError> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| VerifyError::Tool(format!("cannot make the view of the copy read-only: {e}")))
}

/// Every database in the image whose top is `root`, each started in a sandbox of its own from
/// a copy-on-write overlay on its folder (sandbox.rs); `positions` (from the markers) are where
/// their logs stood at the snapshot, by data directory.
fn check_databases(root: &Root, scratch: &Path, positions: &[LogPosition]) -> Vec<DatabaseCheck> {
    sandbox::adopt_orphans();
    databases::find(root)
        .iter()
        .enumerate()
        .map(|(n, (kind, rel))| {
            let mut check = DatabaseCheck::new(*kind, &Path::new("/").join(rel));
            // A dump's whole folder is the server's (it loads the file from its `dir`). The
            // server runs as the owner of what it must write: PostgreSQL's data directory (it
            // refuses any other), MariaDB's system tables (its data directory's top may be
            // root's), the dump.
            let (folder, owned, file) = match kind {
                DatabaseKind::Redis => (
                    rel.parent().unwrap_or(Path::new("")),
                    rel.clone(),
                    rel.file_name().map(|f| f.to_os_string()),
                ),
                DatabaseKind::Mariadb => (rel.as_path(), rel.join("mysql"), None),
                DatabaseKind::Postgresql => (rel.as_path(), rel.clone(), None),
            };
            let dir = scratch.join(format!("db-{n}"));
            let confined = match Confined::prepare(root, folder, &owned, &dir) {
                Ok(confined) => confined,
                Err(problem) => {
                    check.fail(problem);
                    return check.finish();
                }
            };
            let checked = match (kind, file) {
                (DatabaseKind::Postgresql, _) => {
                    // The data directory was at `…/rel` on the machine: its filesystem's
                    // mountpoint, then the path inside it.
                    let position = positions.iter().find(|p| p.data_directory.ends_with(rel));
                    postgres::check(check, root, &confined, position)
                }
                (DatabaseKind::Mariadb, _) => mariadb::check(check, &confined),
                (DatabaseKind::Redis, Some(file)) => redis::check(check, &confined, &file),
                (DatabaseKind::Redis, None) => {
                    check.fail("a dump without a file name");
                    check
                }
            };
            // Nothing it started outlives its check.
            sandbox::kill_leftovers();
            checked.finish()
        })
        .collect()
}

/// What the view is mounted from: the image itself (read-only), or a private sparse copy whose
/// log the mount replays, removed on drop.
enum Source {
    Image(PathBuf),
    Copy(PathBuf),
}

impl Source {
    fn copy_of(image: &Path, scratch: &Path) -> Result<Source, VerifyError> {
        let copy = scratch.join("replayed.img");
        // Made 0600 before a byte is in it: cp keeps an existing file's mode, and a copy of a
        // whole disk must not be readable by anyone else while verify runs.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&copy)
            .map_err(|e| VerifyError::Tool(format!("cannot create {}: {e}", copy.display())))?;
        let (ok, text) = run(
            "cp",
            &[
                "--sparse=always",
                &image.to_string_lossy(),
                &copy.to_string_lossy(),
            ],
        )?;
        if !ok {
            let _ = std::fs::remove_file(&copy);
            return Err(VerifyError::Tool(format!(
                "cannot copy the image: {}",
                text.trim()
            )));
        }
        Ok(Source::Copy(copy))
    }

    fn path(&self) -> &Path {
        match self {
            Source::Image(path) | Source::Copy(path) => path,
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Source::Copy(copy) = self {
            let _ = std::fs::remove_file(copy);
        }
    }
}

/// The filesystem checker, read-only, on an unmounted image (in `tools`).
fn check_filesystem(fstype: &str, tools: &ToolBox) -> Result<(bool, String), VerifyError> {
    match fstype {
        "ext4" => run_on(tools, "e2fsck", &["-n", "-f", IMAGE]),
        "btrfs" => run_on(tools, "btrfs", &["check", "--readonly", IMAGE]),
        _ => run_on(tools, "xfs_repair", &["-n", "-f", IMAGE]),
    }
}

/// Runs a tool of root's own (cp, losetup): its exit status and everything it printed.
fn run(program: &str, args: &[&str]) -> Result<(bool, String), VerifyError> {
    server::output(Command::new(program).args(args)).map_err(|e| VerifyError::Tool(e.to_string()))
}

/// Runs a read-only tool on the image in `tools` (at `IMAGE`), in their sandbox.
fn run_on(tools: &ToolBox, program: &str, args: &[&str]) -> Result<(bool, String), VerifyError> {
    server::output(tools.command(program).args(args)).map_err(|e| VerifyError::Tool(e.to_string()))
}

fn filesystem_type(tools: &ToolBox, image: &Path) -> Result<String, VerifyError> {
    let (_, found) = run_on(tools, "blkid", &["-p", "-o", "value", "-s", "TYPE", IMAGE])?;
    let found = found.trim().to_string();
    match found.as_str() {
        "ext4" | "xfs" | "btrfs" => Ok(found),
        _ => Err(VerifyError::UnknownFilesystem {
            path: image.to_path_buf(),
            found: if found.is_empty() {
                "nothing recognised".into()
            } else {
                found
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_copy_of_an_image_is_private_from_its_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::write(&image, vec![7u8; 4096]).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let copy = Source::copy_of(&image, &scratch).unwrap();
        let meta = std::fs::metadata(copy.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read(copy.path()).unwrap(), vec![7u8; 4096]);
    }
}
