//! `freezeframe-agent verify --image`: what a snapshot's image proves, without booting it and
//! without changing a byte of it. Four kinds of evidence, each from the image alone:
//! - the snapshot-point probe's markers (see `freeze::probe`): `before` without `after` means
//!   the image was read inside the frozen window, `after` means it was read after the thaw;
//! - the journal: an ext4 frozen when it was read has a clean journal (a freeze flushes it and
//!   clears `needs_recovery`); one that still needs recovery was not read while frozen, markers
//!   or not. The first write after the thaw (the `after` marker's, at the latest) rewrites both
//!   the superblock (`needs_recovery`) and the journal's own superblock (its start): an image
//!   whose superblock is clean while its journal holds transactions was read part-way, the
//!   superblock inside the window and the journal after it ("torn"). The log itself keeps the
//!   `after` marker's creation after a boot replays or discards the journal, so it tells on a
//!   booted machine too (`journal_holds_after`). A frozen btrfs has
//!   committed its transaction and dropped its log tree (`log_root` 0); one with a log tree to
//!   replay was read live. A frozen XFS keeps records in its log (covered, not emptied), so its
//!   log tells nothing either way;
//! - the filesystem checker, read-only;
//! - every database found in it (databases.rs), started from a copy-on-write overlay on the
//!   view (namespace.rs), recovered as a restore would, checked and stopped (postgres.rs,
//!   mariadb.rs, redis.rs; server.rs runs them); PostgreSQL's recovery must reach the WAL
//!   position its quiescer recorded in the `before` marker.
//!
//! An ext4 or btrfs image with a clean (or torn) journal is attached to a read-only loop device and
//! mounted without replay (a cloned btrfs mounts beside its original on kernels with temp-fsid,
//! 6.7 and later). Any other image (a journal that needs recovery, any XFS) is read from a
//! private sparse copy whose log the mount replays, as a restore would. Nothing is mounted
//! outside the caller's private mount namespace.

mod databases;
mod disk;
mod machine;
mod mariadb;
mod namespace;
mod postgres;
mod redis;
mod server;

pub use databases::{DatabaseCheck, DatabaseKind, TableRows};
pub use disk::{verify_any, DiskVerification, Findings, PartitionVerification};
pub use machine::{verify_machine, MachineVerification, MountedFilesystem, VolumeVerification};
pub use namespace::enter_private_mounts;

use crate::freeze::probe;
use crate::loop_mount::{Attach, LoopMount};
use crate::transaction::ports::{Consistency, LogPosition, MarkerRecord, ProbeMoment};
use namespace::Overlay;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// When the platform read the image, as its markers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeVerdict {
    /// `before` and not `after`: read while the filesystem was frozen.
    InsideWindow,
    /// `after` too: read after the thaw, so it may hold writes from after the snapshot point.
    AfterThaw,
    /// No marker (the probe was off, or this is not freezeframe's snapshot).
    NoMarkers,
}

/// The journal's state in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalState {
    /// Nothing to replay: what a freeze leaves.
    Clean,
    /// Transactions to replay: the filesystem was live, not frozen, when it was read.
    NeedsRecovery,
    /// The superblock says clean but the journal holds transactions: the superblock was read
    /// inside the window and the journal after the thaw (a read part-way through it). A boot
    /// discards those transactions, as this check does.
    Torn,
    /// The log cannot tell (XFS: a freeze covers its log but does not empty it).
    NotTold,
}

/// Everything `verify --image` found, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageVerification {
    /// The image or device checked.
    pub image: PathBuf,
    /// Its filesystem type, as blkid names it.
    pub fstype: String,
    /// When the platform read it, by the markers.
    pub probe: ProbeVerdict,
    /// The markers found, as `snapshot.moment`.
    pub markers: Vec<String>,
    /// The consistency the snapshot was taken as, from its `before` marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Consistency>,
    /// The journal's state, read before anything else.
    pub journal: JournalState,
    /// The journal logged the `after` marker's creation: part of the image was read after the
    /// thaw, even if the marker itself is not in it (ext4).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_logged: bool,
    /// Whether the read-only filesystem check passed.
    pub filesystem_ok: bool,
    /// What the checker said, when it did not pass.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filesystem_report: String,
    /// Every database found in the image, started from it and checked.
    #[serde(default)]
    pub databases: Vec<DatabaseCheck>,
    /// Every check passed.
    pub verified: bool,
    /// Why not, one line per failed check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// Why an image could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
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
}

/// Checks `image` (a file or a block device holding one filesystem); `scratch` is a private
/// folder for mountpoints, the overlay's writes, the databases' sockets and, when the journal
/// needs recovery, a sparse copy. Mounts belong in a namespace of the caller's
/// (`enter_private_mounts`).
pub fn verify_image(image: &Path, scratch: &Path) -> Result<ImageVerification, VerifyError> {
    std::fs::File::open(image).map_err(|e| VerifyError::Unreadable {
        path: image.to_path_buf(),
        problem: e.to_string(),
    })?;
    // The databases run as their data's owners, who must reach the overlay inside it.
    std::fs::set_permissions(scratch, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(|e| VerifyError::Tool(format!("cannot open {}: {e}", scratch.display())))?;
    let fstype = filesystem_type(image)?;
    let journal = journal_state(&fstype, image)?;
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
            // Without replay (noload) when clean; a copy's log is replayed as a restore would;
            // nouuid: the original may be mounted here under the same UUID.
            options: Some(match (&source, fstype.as_str()) {
                (Source::Image(_), "btrfs") => "ro,rescue=nologreplay",
                (Source::Image(_), _) => "ro,noload",
                (Source::Copy(_), "xfs") => "nouuid",
                (Source::Copy(_), _) => "rw",
            }),
        },
    )
    .map_err(VerifyError::Tool)?;
    let Markers {
        found: markers,
        record,
    } = read_markers(view.mountpoint());
    let claimed = record.as_ref().map(|r| r.consistency);
    let positions = record.map(|r| r.log_positions).unwrap_or_default();
    let databases = check_databases(view.mountpoint(), scratch, &positions)?;
    drop(view);
    let (filesystem_ok, filesystem_report) = check_filesystem(&fstype, source.path())?;
    drop(source);
    let after_logged = fstype == "ext4" && journal_holds_after(image, &markers);
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

/// What tells when the platform read a filesystem: its markers, its journal's state (`NotTold`
/// on a booted machine, whose boot replayed or discarded it), and whether its journal logged the
/// `after` marker's creation.
#[derive(Debug, Clone, Copy)]
struct Evidence<'a> {
    markers: &'a [(String, ProbeMoment)],
    journal: JournalState,
    after_logged: bool,
}

impl Evidence<'_> {
    /// `after` anywhere (the marker, or its creation in the journal) wins; `before` with a
    /// journal written after the thaw (all of it, or part-way) is after the thaw too; `before`
    /// alone is inside the window. Without markers the journal is a reason of its own, not a
    /// verdict.
    fn verdict(&self) -> ProbeVerdict {
        let has = |moment| self.markers.iter().any(|(_, m)| *m == moment);
        let written_after_thaw = matches!(self.journal, JournalState::NeedsRecovery | JournalState::Torn);
        if has(ProbeMoment::After) || (has(ProbeMoment::Before) && self.after_logged) {
            ProbeVerdict::AfterThaw
        } else if has(ProbeMoment::Before) {
            if written_after_thaw {
                ProbeVerdict::AfterThaw
            } else {
                ProbeVerdict::InsideWindow
            }
        } else {
            ProbeVerdict::NoMarkers
        }
    }

    /// What the verdict says against a snapshot taken as `claimed`, if anything, with the
    /// evidence for it.
    fn reason(&self, claimed: Option<Consistency>) -> Option<String> {
        let (markers, journal, probe) = (self.markers, self.journal, self.verdict());
        let mut evidence = Vec::new();
        if markers.iter().any(|(_, m)| *m == ProbeMoment::After) {
            evidence.push("its probe holds the `after` marker");
        }
        if self.after_logged {
            evidence.push("its journal logged the `after` marker's creation");
        }
        match journal {
            JournalState::Torn => evidence.push(
                "it was read part-way: its superblock is clean, read inside the window, but its \
             journal holds writes made after the thaw",
            ),
            JournalState::NeedsRecovery => evidence.push("its journal needs recovery"),
            JournalState::Clean | JournalState::NotTold => {}
        }
        match probe {
            ProbeVerdict::InsideWindow => None,
            ProbeVerdict::AfterThaw => Some(format!(
                "the image was read after the thaw ({}): writes made after the snapshot point may be \
             in it{}. If the snapshot used thaw_after = \"registered\", this platform does not \
             capture the disk when the action registers: use thaw_after = \"completed\"",
                evidence.join("; "),
                match claimed {
                    Some(c @ (Consistency::Application | Consistency::Filesystem)) => format!(
                        ", so the snapshot taken as {}-consistent is only crash-consistent",
                        c.as_str()
                    ),
                    _ => String::new(),
                }
            )),
            ProbeVerdict::NoMarkers => Some(
                "no snapshot-point markers, so when the disk was read cannot be told \
             (was `freeze.probe` off, or is this not a freezeframe snapshot?)"
                    .to_string(),
            ),
        }
    }
}

/// Every database in the view, each started from a copy-on-write overlay on it; `positions`
/// (from the markers) are where their logs stood at the snapshot, by data directory.
fn check_databases(
    view: &Path,
    scratch: &Path,
    positions: &[LogPosition],
) -> Result<Vec<DatabaseCheck>, VerifyError> {
    let found = databases::find(view);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let overlay = Overlay::mount(view, &scratch.join("overlay"))?;
    let checked = found
        .iter()
        .enumerate()
        .map(|(n, (kind, rel))| {
            let data = overlay.path().join(rel);
            let scratch = scratch.join(format!("db-{n}"));
            let check = DatabaseCheck::new(*kind, &Path::new("/").join(rel));
            match kind {
                DatabaseKind::Postgresql => {
                    // The data directory was at `…/rel` on the machine: its filesystem's
                    // mountpoint, then the path inside it.
                    let position = positions.iter().find(|p| p.data_directory.ends_with(rel));
                    postgres::check(check, &data, &scratch, position)
                }
                DatabaseKind::Mariadb => mariadb::check(check, &data, &scratch),
                DatabaseKind::Redis => redis::check(check, &data, &scratch),
            }
            .finish()
        })
        .collect();
    drop(overlay);
    Ok(checked)
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

/// The filesystem checker, read-only, on an unmounted image.
fn check_filesystem(fstype: &str, source: &Path) -> Result<(bool, String), VerifyError> {
    let path = source.to_string_lossy();
    match fstype {
        "ext4" => run("e2fsck", &["-n", "-f", &path]),
        "btrfs" => run("btrfs", &["check", "--readonly", &path]),
        _ => run("xfs_repair", &["-n", "-f", &path]),
    }
}

/// Runs a read-only tool; its exit status and everything it printed.
fn run(program: &str, args: &[&str]) -> Result<(bool, String), VerifyError> {
    server::output(Command::new(program).args(args)).map_err(VerifyError::Tool)
}

fn filesystem_type(image: &Path) -> Result<String, VerifyError> {
    let path = image.to_string_lossy();
    let (_, found) = run("blkid", &["-p", "-o", "value", "-s", "TYPE", &path])?;
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

fn journal_state(fstype: &str, image: &Path) -> Result<JournalState, VerifyError> {
    let path = image.to_string_lossy();
    match fstype {
        "ext4" => {
            let (ok, text) = run("dumpe2fs", &["-h", &path])?;
            if !ok {
                return Err(VerifyError::Tool(format!(
                    "dumpe2fs cannot read {path}: {}",
                    text.trim()
                )));
            }
            Ok(ext4_journal(&text))
        }
        "btrfs" => {
            let (ok, text) = run("btrfs", &["inspect-internal", "dump-super", &path])?;
            let log_root = text.lines().find_map(|l| {
                // `log_root   0`, not `log_root_level   0`.
                let rest = l.strip_prefix("log_root")?;
                rest.starts_with(char::is_whitespace)
                    .then(|| rest.trim().parse::<u64>().ok())?
            });
            match (ok, log_root) {
                (true, Some(0)) => Ok(JournalState::Clean),
                (true, Some(_)) => Ok(JournalState::NeedsRecovery),
                _ => Err(VerifyError::Tool(format!(
                    "btrfs inspect-internal dump-super cannot read {path}: {}",
                    text.trim()
                ))),
            }
        }
        _ => Ok(JournalState::NotTold),
    }
}

/// Whether the ext4 journal of `device` holds the `after` marker of the snapshot whose markers
/// are `markers`: the marker's creation (its directory block, as metadata) is the first thing
/// logged after the thaw, and the log keeps it after a boot replays or discards the journal,
/// until it wraps. So an image whose journal holds it was read, at least in part, after the
/// thaw, even when the marker's own blocks were read before it was written.
fn journal_holds_after(device: &Path, markers: &[(String, ProbeMoment)]) -> bool {
    let Some((snapshot, _)) = markers.iter().find(|(_, m)| *m == ProbeMoment::Before) else {
        return false;
    };
    let needle = probe::marker_name(snapshot, ProbeMoment::After).into_bytes();
    let child = Command::new("debugfs")
        .args(["-c", "-R", "cat <8>"])
        .arg(device)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let found = child
        .stdout
        .take()
        .is_some_and(|mut out| stream_contains(&mut out, &needle));
    let _ = child.kill();
    let _ = child.wait();
    found
}

/// Whether `reader` yields `needle` anywhere, read a chunk at a time.
fn stream_contains(reader: &mut impl std::io::Read, needle: &[u8]) -> bool {
    let mut window: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        window.extend_from_slice(&chunk[..n]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        // Keep what could begin a match that the next chunk ends.
        let keep = window.len().min(needle.len().saturating_sub(1));
        window.drain(..window.len() - keep);
    }
}

/// An ext4 journal's state from `dumpe2fs -h`: the superblock's `needs_recovery`, and the
/// journal superblock's start (0 when empty).
fn ext4_journal(dumpe2fs: &str) -> JournalState {
    let field = |name: &str| {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    let needs_recovery = field("Filesystem features:")
        .split_whitespace()
        .any(|f| f == "needs_recovery");
    // An external journal, or none, prints no start: nothing to compare.
    let journal_written = !matches!(field("Journal start:"), "" | "0");
    match (needs_recovery, journal_written) {
        (true, _) => JournalState::NeedsRecovery,
        (false, true) => JournalState::Torn,
        (false, false) => JournalState::Clean,
    }
}

/// The probe's markers in an image, and the consistency the snapshot claimed.
struct Markers {
    found: Vec<(String, ProbeMoment)>,
    /// What the `before` marker records of the run.
    record: Option<MarkerRecord>,
}

/// The probe's markers in the filesystem mounted at `root`.
fn read_markers(root: &Path) -> Markers {
    let dirs = [
        root.join(probe::PROBE_DIR),
        root.join(probe::ROOT_PROBE_DIR.trim_start_matches('/')),
    ];
    let found: Vec<(String, ProbeMoment)> = dirs.iter().flat_map(|d| probe::markers_in(d)).collect();
    let before = dirs
        .iter()
        .flat_map(|d| found.iter().filter_map(move |(name, _)| probe::claimed(d, name)))
        .next();
    Markers {
        found,
        record: before.map(|content| content.record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumpe2fs(features: &str, start: &str) -> String {
        format!(
            "Filesystem features:      has_journal ext_attr {features} extent\n\
             Journal sequence:         0x00000002\nJournal start:            {start}\n"
        )
    }

    #[test]
    fn the_superblock_and_the_journal_tell_when_an_ext4_was_read() {
        assert_eq!(ext4_journal(&dumpe2fs("", "0")), JournalState::Clean);
        assert_eq!(
            ext4_journal(&dumpe2fs("needs_recovery", "9")),
            JournalState::NeedsRecovery
        );
        assert_eq!(ext4_journal(&dumpe2fs("", "9")), JournalState::Torn);
        // No journal start printed (an external journal): nothing to compare.
        assert_eq!(
            ext4_journal("Filesystem features:      has_journal extent\n"),
            JournalState::Clean
        );
    }

    #[test]
    fn a_journal_written_after_the_thaw_outweighs_the_before_marker() {
        let before = [("s1".to_string(), ProbeMoment::Before)];
        let both = [
            ("s1".to_string(), ProbeMoment::Before),
            ("s1".to_string(), ProbeMoment::After),
        ];
        let verdict = |markers: &[(String, ProbeMoment)], journal, after_logged| {
            Evidence {
                markers,
                journal,
                after_logged,
            }
            .verdict()
        };
        use JournalState::*;
        use ProbeVerdict::*;
        assert_eq!(verdict(&before, Clean, false), InsideWindow);
        assert_eq!(verdict(&before, NotTold, false), InsideWindow);
        assert_eq!(verdict(&before, Torn, false), AfterThaw);
        assert_eq!(verdict(&before, NeedsRecovery, false), AfterThaw);
        assert_eq!(verdict(&both, Clean, false), AfterThaw);
        // A booted machine: the journal's state is gone, but its log still holds the marker.
        assert_eq!(verdict(&before, NotTold, true), AfterThaw);
        // Without markers the journal is a reason of its own, not a verdict.
        assert_eq!(verdict(&[], Torn, false), NoMarkers);
        let reason = Evidence {
            markers: &before,
            journal: Torn,
            after_logged: true,
        }
        .reason(Some(Consistency::Application))
        .unwrap();
        assert!(reason.contains("part-way"), "{reason}");
        assert!(
            reason.contains("logged the `after` marker's creation"),
            "{reason}"
        );
        assert!(reason.contains("only crash-consistent"), "{reason}");
        assert!(reason.contains("thaw_after"), "{reason}");
    }

    #[test]
    fn a_needle_is_found_across_the_chunks_it_is_read_in() {
        let mut text = vec![b'x'; (1 << 20) - 3];
        text.extend_from_slice(b"snap.after");
        assert!(stream_contains(&mut text.as_slice(), b"snap.after"));
        assert!(!stream_contains(&mut text.as_slice(), b"snap.before"));
    }
}
