//! Resumes owed, recorded in the runtime directory: each entry is written before its `prepare`
//! starts and removed once its `resume` ran. An agent killed in between (SIGKILL, OOM) cannot
//! resume anything itself, so `freezeframe-agent thaw` (the unit's ExecStopPost) and the next
//! run do it from this record, in reverse order, after the filesystems are thawed.
//!
//! Only what outlives the agent is recorded: units frozen or stopped through systemd, and hooks
//! (whose `thaw` nothing else would run). A MariaDB lock session ends with the agent by itself;
//! PostgreSQL's CHECKPOINT and Redis's BGSAVE leave nothing to undo.

use super::process_group::ProcessGroup;
use std::fmt;
use std::path::{Path, PathBuf};

/// The record's file name in the runtime directory.
pub(crate) const PENDING_FILE: &str = "pending-resumes";

/// One resume owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A unit frozen with FreezeUnit: thaw it.
    FrozenUnit(String),
    /// A unit stopped with StopUnit: start it.
    StoppedUnit(String),
    /// A hook whose `freeze` started: run it with `thaw`, after ending what is left of the
    /// hook's `freeze` or `thaw` that was `running` when the agent died.
    Hook { path: PathBuf, running: Option<Running> },
}

/// Where a hook runs, while it runs: what a resume for a dead agent ends before its `thaw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Running {
    /// Spawned by the agent: its process group.
    Group(ProcessGroup),
    /// A transient systemd service: stopping it ends all it started.
    Unit(String),
}

impl Pending {
    fn to_line(&self) -> String {
        match self {
            Pending::FrozenUnit(unit) => format!("thaw-unit {unit}"),
            Pending::StoppedUnit(unit) => format!("start-unit {unit}"),
            Pending::Hook { path, running: None } => format!("hook {}", path.display()),
            Pending::Hook {
                path,
                running: Some(Running::Group(group)),
            } => format!("hook-running {group} {}", path.display()),
            Pending::Hook {
                path,
                running: Some(Running::Unit(unit)),
            } => format!("hook-unit {unit} {}", path.display()),
        }
    }

    /// A hook entry with nothing running.
    pub(crate) fn hook(path: PathBuf) -> Pending {
        Pending::Hook { path, running: None }
    }

    /// Whether `other` stands for the same resume (a hook's running group aside).
    fn same_resume(&self, other: &Pending) -> bool {
        match (self, other) {
            (Pending::Hook { path: a, .. }, Pending::Hook { path: b, .. }) => a == b,
            _ => self == other,
        }
    }

    fn from_line(line: &str) -> Option<Pending> {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "thaw-unit" => Some(Pending::FrozenUnit(rest.into())),
            "start-unit" => Some(Pending::StoppedUnit(rest.into())),
            "hook" => Some(Pending::hook(rest.into())),
            "hook-running" => {
                let (group, path) = rest.split_once(' ')?;
                Some(Pending::Hook {
                    path: path.into(),
                    running: Some(Running::Group(group.parse().ok()?)),
                })
            }
            "hook-unit" => {
                let (unit, path) = rest.split_once(' ')?;
                Some(Pending::Hook {
                    path: path.into(),
                    running: Some(Running::Unit(unit.into())),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::FrozenUnit(unit) => write!(f, "{unit} (frozen): thaw"),
            Pending::StoppedUnit(unit) => write!(f, "{unit} (stopped): start"),
            Pending::Hook { path, .. } => write!(f, "hook {}: thaw", path.display()),
        }
    }
}

fn path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(PENDING_FILE)
}

/// What the record lists, in the order the prepares started.
pub(crate) fn recorded(runtime_dir: &Path) -> Vec<Pending> {
    std::fs::read_to_string(path(runtime_dir))
        .map(|t| t.lines().filter_map(Pending::from_line).collect())
        .unwrap_or_default()
}

fn write(runtime_dir: &Path, entries: &[Pending]) -> std::io::Result<()> {
    if entries.is_empty() {
        return match std::fs::remove_file(path(runtime_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text: String = entries.iter().map(|e| e.to_line() + "\n").collect();
    crate::atomic_file::replace(&path(runtime_dir), text.as_bytes(), 0o600)
}

/// Records `entry` before its prepare starts, or updates it in place (a hook's running group).
/// An entry that cannot be written on one line (a hook path with a newline) is refused, so it
/// is never prepared unrecorded.
pub(crate) fn add(runtime_dir: &Path, entry: Pending) -> std::io::Result<()> {
    if entry.to_line().contains('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{entry:?} has a newline in its name"),
        ));
    }
    let mut entries = recorded(runtime_dir);
    match entries.iter_mut().find(|e| e.same_resume(&entry)) {
        Some(recorded) => *recorded = entry,
        None => entries.push(entry),
    }
    write(runtime_dir, &entries)
}

/// Forgets `entry` once its resume ran.
pub(crate) fn remove(runtime_dir: &Path, entry: &Pending) -> std::io::Result<()> {
    let entries: Vec<Pending> = recorded(runtime_dir)
        .into_iter()
        .filter(|e| !e.same_resume(entry))
        .collect();
    write(runtime_dir, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_recorded_in_order_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded(dir.path()).is_empty());
        let a = Pending::FrozenUnit("a.service".into());
        let b = Pending::StoppedUnit("b.service".into());
        let h = Pending::hook("/etc/freezeframe/hooks.d/10 db".into());
        for e in [&a, &b, &h, &a] {
            add(dir.path(), e.clone()).unwrap();
        }
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), h.clone()]);
        // A hook's running group is recorded in its place, and read back.
        let running = Pending::Hook {
            path: "/etc/freezeframe/hooks.d/10 db".into(),
            running: Some(Running::Group("4242:123456".parse().unwrap())),
        };
        add(dir.path(), running.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), running]);
        let running = Pending::Hook {
            path: "/etc/freezeframe/hooks.d/10 db".into(),
            running: Some(Running::Unit("freezeframe-hook-10-db-freeze-1-1.service".into())),
        };
        add(dir.path(), running.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), running]);
        add(dir.path(), h.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), h.clone()]);
        remove(dir.path(), &a).unwrap();
        remove(dir.path(), &b).unwrap();
        assert_eq!(recorded(dir.path()), std::slice::from_ref(&h));
        remove(dir.path(), &h).unwrap();
        assert!(!path(dir.path()).exists(), "an empty record is no file");
        assert!(add(dir.path(), Pending::hook("/x\nthaw-unit y".into())).is_err());
        assert!(recorded(dir.path()).is_empty());
    }
}
