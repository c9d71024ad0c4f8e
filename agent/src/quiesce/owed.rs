//! The resumes a dead agent owed, done from its record (`pending.rs`) by `thaw` and the next
//! run: units thawed or started, what a cut-short hook left running ended, then its `thaw`, then
//! what its `freeze` left running (a lock session the `thaw` was to end).

use super::hooks;
use super::pending::{recorded, remove, Pending, Running};
use crate::systemd::{SystemdError, Units};
use crate::transaction::ports::QuiesceError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an owed resume failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OwedError {
    /// systemd could not be asked about the unit, or would not thaw or start it: the unit stays
    /// recorded, to be tried again.
    #[error(transparent)]
    Unit(#[from] SystemdError),
    /// The hook's `thaw` failed; it is not repeated.
    #[error(transparent)]
    Hook(QuiesceError),
    /// The engine could not be asked about the container, or would not unpause it: it stays
    /// recorded, to be tried again.
    #[error(transparent)]
    Container(#[from] crate::container::EngineError),
}

/// Runs every recorded resume, last prepared first; forgets the hooks, and the units that are
/// resumed (or gone). Returns what happened to each. What a hook's `freeze` left running is ended
/// right after that hook's `thaw` (which may need it, as a lock session's client), and belongs
/// to the hook's outcome.
pub(crate) async fn resume_recorded(
    runtime_dir: &Path,
    units: &dyn Units,
    hook_timeout: Duration,
) -> Vec<(Pending, Result<(), OwedError>)> {
    let entries = recorded(runtime_dir);
    let hooks: Vec<PathBuf> = entries
        .iter()
        .filter_map(|e| match e {
            Pending::Hook { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let mut outcomes = Vec::new();
    for entry in entries.iter().rev() {
        let outcome = match entry {
            Pending::FrozenUnit(unit) => match units.describe(unit).await {
                Ok(state) if state.freezer_state == "running" || state.load_state != "loaded" => Ok(()),
                Ok(_) => units.thaw(unit).await.map_err(OwedError::Unit),
                Err(e) => Err(e.into()),
            },
            Pending::StoppedUnit(unit) => match units.describe(unit).await {
                Ok(state) if state.active_state == "active" || state.load_state != "loaded" => Ok(()),
                Ok(_) => units.start(unit).await.map_err(OwedError::Unit),
                Err(e) => Err(e.into()),
            },
            Pending::PausedContainer { id, socket } => unpause(id, socket).await,
            Pending::Hook { path, running } => {
                if let Some(running) = running {
                    end(path, running, units).await;
                }
                let thawed = hooks::thaw_recorded(path, hook_timeout, units)
                    .await
                    .map_err(OwedError::Hook);
                // The `thaw` ran (or cannot): what the `freeze` left goes now, or never.
                for left in entries.iter() {
                    if let Pending::HookLeft { path: p, left } = left {
                        if p == path {
                            end(path, left, units).await;
                        }
                    }
                }
                thawed
            }
            // Ended after its hook's `thaw`, above; alone (its hook's `thaw` already ran), now.
            Pending::HookLeft { path, .. } if hooks.contains(path) => continue,
            Pending::HookLeft { path, left } => {
                end(path, left, units).await;
                Ok(())
            }
        };
        // A unit's state can be checked again later; a hook's `thaw` is not repeated.
        match entry {
            Pending::Hook { path, .. } => {
                let _ = super::pending::remove_hook(runtime_dir, path);
            }
            _ if outcome.is_ok() => {
                let _ = remove(runtime_dir, entry);
            }
            _ => {}
        }
        outcomes.push((entry.clone(), outcome));
    }
    outcomes
}

/// Unpauses a container a dead agent paused, if it is still paused (an operator may have
/// unpaused it, or removed it, since).
async fn unpause(id: &str, socket: &Path) -> Result<(), OwedError> {
    let engine = crate::container::Docker::new(socket.to_path_buf());
    unpause_with(&engine, id).await
}

async fn unpause_with(engine: &dyn crate::container::Engine, id: &str) -> Result<(), OwedError> {
    if engine.paused(id).await? == Some(true) {
        engine.unpause(id).await?;
    }
    Ok(())
}

/// Ends what is left of a hook's run: kills its process group, or stops its unit.
async fn end(hook: &Path, running: &Running, units: &dyn Units) {
    match running {
        Running::Group(group) => {
            let killed = group.kill_leftovers(Duration::from_secs(5)).await;
            if killed > 0 {
                tracing::warn!(
                    "hook {}: killed {killed} processes left running by the dead agent's run",
                    hook.display()
                );
            }
        }
        Running::Unit(unit) => {
            if let Err(e) = units.stop(unit).await {
                tracing::warn!("hook {}: cannot stop {unit}: {e}", hook.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quiesce::pending::add;

    #[tokio::test]
    async fn hooks_are_resumed_last_first_and_forgotten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut hooks = Vec::new();
        for name in ["10-a", "20-b"] {
            let hook = dir.path().join(name);
            std::fs::write(
                &hook,
                format!("#!/bin/sh\necho \"{name} $1\" >> {}\n", log.display()),
            )
            .unwrap();
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
            add(dir.path(), Pending::hook(hook.clone())).unwrap();
            hooks.push(hook);
        }
        let units = crate::systemd::Unreachable("no bus in this test".into());
        let outcomes = resume_recorded(dir.path(), &units, Duration::from_secs(10)).await;
        if nix::unistd::geteuid().is_root() {
            assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
            assert_eq!(std::fs::read_to_string(&log).unwrap(), "20-b thaw\n10-a thaw\n");
            assert!(recorded(dir.path()).is_empty());
        } else {
            // Hooks must be root's: as another user they are refused and stay recorded.
            assert!(
                outcomes.iter().all(|(_, o)| matches!(o, Err(OwedError::Hook(_)))),
                "{outcomes:?}"
            );
            assert_eq!(recorded(dir.path()).len(), 2);
        }
    }

    /// A unit systemd cannot be asked about fails as systemd's error and stays recorded, to be
    /// tried again; its message is systemd's.
    #[tokio::test]
    async fn a_unit_systemd_cannot_be_asked_about_stays_owed() {
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), Pending::FrozenUnit("app.service".into())).unwrap();
        let units = crate::systemd::Unreachable("no bus in this test".into());
        let outcomes = resume_recorded(dir.path(), &units, Duration::from_secs(10)).await;
        let [(_, Err(OwedError::Unit(SystemdError::Unreachable(why))))] = outcomes.as_slice() else {
            panic!("{outcomes:?}");
        };
        assert_eq!(why, "no bus in this test");
        assert_eq!(recorded(dir.path()).len(), 1);
    }
}
