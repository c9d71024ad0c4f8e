//! Units the agent froze with FreezeUnit, recorded in the runtime directory before each freeze
//! and removed after its thaw. A unit stays frozen if the agent dies in between (SIGKILL), and
//! no kernel guard thaws a cgroup: `freezeframe-agent thaw` (the unit's ExecStopPost) and the
//! next run thaw what this record lists.

use super::Units;
use std::path::{Path, PathBuf};

/// The record's file name in the runtime directory.
pub const FROZEN_UNITS_FILE: &str = "frozen-units";

fn path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(FROZEN_UNITS_FILE)
}

/// The units the record lists, one per line.
pub fn recorded(runtime_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(path(runtime_dir))
        .map(|t| t.lines().filter(|l| !l.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

fn write(runtime_dir: &Path, units: &[String]) -> std::io::Result<()> {
    if units.is_empty() {
        return match std::fs::remove_file(path(runtime_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let partial = path(runtime_dir).with_extension("partial");
    std::fs::write(&partial, units.join("\n") + "\n")?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(partial, path(runtime_dir))
}

/// Records `unit` before it is frozen.
pub fn add(runtime_dir: &Path, unit: &str) -> std::io::Result<()> {
    let mut units = recorded(runtime_dir);
    if !units.iter().any(|u| u == unit) {
        units.push(unit.to_string());
    }
    write(runtime_dir, &units)
}

/// Forgets `unit` once it is thawed.
pub fn remove(runtime_dir: &Path, unit: &str) -> std::io::Result<()> {
    let units: Vec<String> = recorded(runtime_dir).into_iter().filter(|u| u != unit).collect();
    write(runtime_dir, &units)
}

/// Thaws every recorded unit; forgets those that thawed (or are gone). Returns what happened.
pub async fn thaw_recorded(runtime_dir: &Path, units: &dyn Units) -> Vec<(String, Result<(), String>)> {
    let mut outcomes = Vec::new();
    for unit in recorded(runtime_dir) {
        let outcome = match units.describe(&unit).await {
            Ok(state) if state.freezer_state == "running" || state.load_state != "loaded" => Ok(()),
            Ok(_) => units.thaw(&unit).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if outcome.is_ok() {
            let _ = remove(runtime_dir, &unit);
        }
        outcomes.push((unit, outcome));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_recorded_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded(dir.path()).is_empty());
        add(dir.path(), "a.service").unwrap();
        add(dir.path(), "b.service").unwrap();
        add(dir.path(), "a.service").unwrap();
        assert_eq!(recorded(dir.path()), ["a.service", "b.service"]);
        remove(dir.path(), "a.service").unwrap();
        remove(dir.path(), "b.service").unwrap();
        assert!(!path(dir.path()).exists(), "an empty record is no file");
    }
}
