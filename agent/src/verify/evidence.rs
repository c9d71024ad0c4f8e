//! When the platform read a filesystem, from what the filesystem itself holds:
//! - the probe's markers (see `freeze::probe`): `before` without `after` means it was read
//!   inside the frozen window, `after` means after the thaw;
//! - the journal: an ext4 frozen when it was read has a clean journal (a freeze flushes it and
//!   clears `needs_recovery`); one that still needs recovery was not read while frozen. The
//!   first write after the thaw (the `after` marker's, at the latest) rewrites both the
//!   superblock (`needs_recovery`) and the journal's own superblock (its start): a clean
//!   superblock over a journal that holds transactions was read part-way, the superblock inside
//!   the window and the journal after it ("torn"). A frozen btrfs has committed its transaction
//!   and dropped its log tree (`log_root` 0); one with a log tree was read live. A frozen XFS
//!   keeps records in its log (covered, not emptied), so its log tells nothing either way;
//! - ext4's log itself, which keeps the `after` marker's creation after a boot replays or
//!   discards the journal, so it tells on a booted machine too (`journal_holds_after`).

use super::inside::{Kind, Root};
use super::sandbox::{ToolBox, IMAGE};
use super::{run_on, JournalState, ProbeVerdict, VerifyError};
use crate::freeze::probe;
use crate::transaction::ports::{Consistency, MarkerRecord, ProbeMoment};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What tells when the platform read a filesystem: its markers, its journal's state (`NotTold`
/// on a booted machine, whose boot replayed or discarded it), and whether its journal logged the
/// `after` marker's creation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Evidence<'a> {
    pub(super) markers: &'a [(String, ProbeMoment)],
    pub(super) journal: JournalState,
    pub(super) after_logged: bool,
}

impl Evidence<'_> {
    /// `after` anywhere (the marker, or its creation in the journal) wins; `before` with a
    /// journal written after the thaw (all of it, or part-way) is after the thaw too; `before`
    /// alone is inside the window. Without markers the journal is a reason of its own, not a
    /// verdict.
    pub(super) fn verdict(&self) -> ProbeVerdict {
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
    pub(super) fn reason(&self, claimed: Option<Consistency>) -> Option<String> {
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

/// The journal's state of the image in `tools`.
pub(super) fn journal_state(fstype: &str, tools: &ToolBox) -> Result<JournalState, VerifyError> {
    let path = IMAGE;
    match fstype {
        "ext4" => {
            let (ok, text) = run_on(tools, "dumpe2fs", &["-h", path])?;
            if !ok {
                return Err(VerifyError::Tool(format!(
                    "dumpe2fs cannot read {path}: {}",
                    text.trim()
                )));
            }
            Ok(ext4_journal(&text))
        }
        "btrfs" => {
            let (ok, text) = run_on(tools, "btrfs", &["inspect-internal", "dump-super", path])?;
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
/// `debugfs` is the command that runs it (in a sandbox, for an image).
pub(super) fn journal_holds_after(
    mut debugfs: Command,
    device: &Path,
    markers: &[(String, ProbeMoment)],
) -> bool {
    let Some((snapshot, _)) = markers.iter().find(|(_, m)| *m == ProbeMoment::Before) else {
        return false;
    };
    let needle = probe::marker_name(snapshot, ProbeMoment::After).into_bytes();
    let child = debugfs
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
pub(super) struct Markers {
    pub(super) found: Vec<(String, ProbeMoment)>,
    /// What the `before` marker records of the run.
    pub(super) record: Option<MarkerRecord>,
    /// The boot the `before` marker was written in, when it says.
    pub(super) boot_id: Option<String>,
}

/// The probe's markers in the filesystem whose top is `root`: the probe folders resolved inside
/// the image (a `var` that links to `/var` leads to the image's own `/var`, never to this
/// machine's), each marker a regular file in them, read without following a link.
pub(super) fn read_markers(root: &Root) -> Markers {
    let dirs = [
        PathBuf::from(probe::PROBE_DIR),
        PathBuf::from(probe::ROOT_PROBE_DIR.trim_start_matches('/')),
    ];
    let mut found: Vec<(String, ProbeMoment)> = Vec::new();
    let mut record = None;
    let mut boot_id = None;
    for dir in &dirs {
        let mut here: Vec<(String, ProbeMoment)> = root
            .entries(dir)
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .filter_map(|(name, _)| marker_of(&name.into_string().ok()?))
            .collect();
        here.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
        for (snapshot, moment) in &here {
            if record.is_none() && *moment == ProbeMoment::Before {
                let name = dir.join(probe::marker_name(snapshot, ProbeMoment::Before));
                let content = root
                    .read_to_string(&name, MARKER_LIMIT)
                    .ok()
                    .and_then(|text| serde_json::from_str::<probe::MarkerContent>(&text).ok());
                if let Some(content) = content {
                    record = Some(content.record);
                    boot_id = content.boot_id;
                }
            }
        }
        found.extend(here);
    }
    Markers {
        found,
        record,
        boot_id,
    }
}

/// No marker is longer (a record names a few databases).
const MARKER_LIMIT: u64 = 1 << 20;

/// The snapshot and moment a marker's file name gives (`name.before`).
fn marker_of(name: &str) -> Option<(String, ProbeMoment)> {
    ProbeMoment::ALL.into_iter().find_map(|moment| {
        let snapshot = name.strip_suffix(&format!(".{}", moment.as_str()))?;
        Some((snapshot.to_string(), moment))
    })
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
