//! `kind = "systemd"`: quiesce any service through systemd. `freeze` stops its processes in
//! place with the cgroup freezer (`FreezeUnit`, undone by `ThawUnit`); `stop` stops the unit
//! and starts it again after the thaw, waiting for each job to end with `done`.

use super::pending::{self, Pending};
use crate::config::UnitMode;
use crate::systemd::{UnitState, Units};
use crate::transaction::ports::{QuiesceError, Quiescer, Target};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct SystemdUnit {
    unit: String,
    mode: UnitMode,
    units: Arc<dyn Units>,
    timeout: Duration,
    /// Where the cgroup v2 hierarchy is mounted, to check that the freezer is available.
    cgroup_root: PathBuf,
    /// The runtime directory, where a frozen or stopped unit is recorded until it is resumed.
    runtime_dir: Option<PathBuf>,
    name: String,
}

impl SystemdUnit {
    pub(crate) fn new(unit: String, mode: UnitMode, units: Arc<dyn Units>, timeout: Duration) -> Self {
        let name = format!("systemd {unit} ({mode})");
        SystemdUnit {
            unit,
            mode,
            units,
            timeout,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            runtime_dir: None,
            name,
        }
    }

    /// Records the unit in `runtime_dir` while it is frozen or stopped, so that a dead agent's
    /// unit is resumed by `freezeframe-agent thaw` or the next run ([`pending`]).
    pub(crate) fn recorded_in(mut self, runtime_dir: PathBuf) -> Self {
        self.runtime_dir = Some(runtime_dir);
        self
    }

    fn pending(&self) -> Pending {
        match self.mode {
            UnitMode::Freeze => Pending::FrozenUnit(self.unit.clone()),
            UnitMode::Stop => Pending::StoppedUnit(self.unit.clone()),
        }
    }

    #[cfg(test)]
    /// For tests: a cgroup hierarchy of their own.
    pub(crate) fn with_cgroup_root(mut self, root: PathBuf) -> Self {
        self.cgroup_root = root;
        self
    }

    fn error(&self, problem: impl std::fmt::Display) -> QuiesceError {
        QuiesceError::new(format!("{}: {problem}", self.unit))
    }
}

/// Why the kernel's freezer cannot freeze a unit here, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FreezerUnavailable {
    /// The cgroup v1 (or hybrid) hierarchy: no freezer for units.
    #[error(
        "{} is not the unified cgroup hierarchy (cgroup v2), which the freezer needs; use \
         mode = \"stop\", or boot with systemd.unified_cgroup_hierarchy=1",
        root.display()
    )]
    NotUnified { root: PathBuf },
    /// The unit's cgroup has no `cgroup.freeze` (a kernel before 5.2).
    #[error(
        "its cgroup {} has no cgroup.freeze (kernel older than 5.2?); use mode = \"stop\"",
        cgroup.display()
    )]
    NoFreezeFile { cgroup: PathBuf },
}

/// Whether the kernel's cgroup v2 freezer can freeze `state`'s cgroup: the unified hierarchy
/// with a `cgroup.freeze` file for it. systemd's own CanFreeze says only that the unit type
/// could be frozen, not that the host's cgroup setup allows it.
fn freezer_available(cgroup_root: &Path, state: &UnitState) -> Result<(), FreezerUnavailable> {
    if !cgroup_root.join("cgroup.controllers").exists() {
        return Err(FreezerUnavailable::NotUnified {
            root: cgroup_root.to_path_buf(),
        });
    }
    let cgroup = cgroup_root.join(state.control_group.trim_start_matches('/'));
    if state.control_group.is_empty() || !cgroup.join("cgroup.freeze").exists() {
        return Err(FreezerUnavailable::NoFreezeFile { cgroup });
    }
    Ok(())
}

#[async_trait::async_trait]
impl Quiescer for SystemdUnit {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare_timeout(&self) -> Duration {
        self.timeout
    }

    fn resume_timeout(&self) -> Duration {
        self.timeout
    }

    async fn check(&mut self, _targets: &[Target]) -> Result<(), QuiesceError> {
        let state = self
            .units
            .describe(&self.unit)
            .await
            .map_err(QuiesceError::caused_by)?;
        if state.load_state != "loaded" {
            return Err(self.error(format!(
                "the unit is {}; check the name with `systemctl status {}`",
                state.load_state, self.unit
            )));
        }
        if state.active_state != "active" {
            return Err(self.error(format!(
                "the unit is {}, not active: there is nothing to quiesce (remove the [[quiescer]], \
                 or start the unit)",
                state.active_state
            )));
        }
        if self.mode == UnitMode::Freeze {
            if !state.can_freeze {
                return Err(self.error("systemd cannot freeze this unit; use mode = \"stop\""));
            }
            if state.freezer_state != "running" {
                return Err(self.error(format!(
                    "it is already {} by someone else; thaw it first (`systemctl thaw {}`)",
                    state.freezer_state, self.unit
                )));
            }
            freezer_available(&self.cgroup_root, &state).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        if let Some(dir) = &self.runtime_dir {
            pending::add(dir, self.pending())
                .map_err(|e| self.error(format!("cannot record the unit in {}: {e}", dir.display())))?;
        }
        match self.mode {
            UnitMode::Freeze => self.units.freeze(&self.unit).await,
            UnitMode::Stop => self.units.stop(&self.unit).await,
        }
        .map_err(QuiesceError::caused_by)
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        match self.mode {
            UnitMode::Freeze => {
                // A freeze that failed part-way may have left the unit frozen, or not at all.
                let state = self
                    .units
                    .describe(&self.unit)
                    .await
                    .map_err(QuiesceError::caused_by)?;
                if state.freezer_state != "running" {
                    self.units
                        .thaw(&self.unit)
                        .await
                        .map_err(QuiesceError::caused_by)?;
                }
            }
            UnitMode::Stop => self
                .units
                .start(&self.unit)
                .await
                .map_err(QuiesceError::caused_by)?,
        }
        if let Some(dir) = &self.runtime_dir {
            let _ = pending::remove(dir, &self.pending());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::SystemdError;
    use std::sync::Mutex;

    /// A systemd double that records calls and holds one unit's state.
    struct FakeUnits {
        state: Mutex<UnitState>,
        calls: Mutex<Vec<String>>,
        fail_freeze: bool,
    }

    impl FakeUnits {
        fn new(active: &str, can_freeze: bool) -> Arc<Self> {
            Arc::new(FakeUnits {
                state: Mutex::new(UnitState {
                    name: "app.service".into(),
                    load_state: "loaded".into(),
                    active_state: active.into(),
                    freezer_state: "running".into(),
                    can_freeze,
                    control_group: "/system.slice/app.service".into(),
                    main_pid: Some(42),
                }),
                calls: Mutex::new(Vec::new()),
                fail_freeze: false,
            })
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl Units for FakeUnits {
        async fn list_active(&self, _: &[&str]) -> Result<Vec<UnitState>, SystemdError> {
            Ok(vec![self.state.lock().unwrap().clone()])
        }
        async fn describe(&self, _: &str) -> Result<UnitState, SystemdError> {
            Ok(self.state.lock().unwrap().clone())
        }
        async fn freeze(&self, unit: &str) -> Result<(), SystemdError> {
            self.calls.lock().unwrap().push(format!("freeze {unit}"));
            if self.fail_freeze {
                return Err(SystemdError::Unit {
                    unit: unit.into(),
                    message: "Unit does not support freezing".into(),
                });
            }
            self.state.lock().unwrap().freezer_state = "frozen".into();
            Ok(())
        }
        async fn thaw(&self, unit: &str) -> Result<(), SystemdError> {
            self.calls.lock().unwrap().push(format!("thaw {unit}"));
            self.state.lock().unwrap().freezer_state = "running".into();
            Ok(())
        }
        async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
            self.calls.lock().unwrap().push(format!("stop {unit}"));
            Ok(())
        }
        async fn start(&self, unit: &str) -> Result<(), SystemdError> {
            self.calls.lock().unwrap().push(format!("start {unit}"));
            Ok(())
        }
    }

    fn cgroup_v2(with_freeze: bool) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let unit = root.path().join("system.slice/app.service");
        std::fs::create_dir_all(&unit).unwrap();
        if with_freeze {
            std::fs::write(unit.join("cgroup.freeze"), "0\n").unwrap();
        }
        root
    }

    fn quiescer(units: Arc<FakeUnits>, mode: UnitMode, cgroups: &Path) -> SystemdUnit {
        SystemdUnit::new("app.service".into(), mode, units, Duration::from_secs(5))
            .with_cgroup_root(cgroups.to_path_buf())
    }

    #[tokio::test]
    async fn freeze_mode_freezes_then_thaws() {
        let cgroups = cgroup_v2(true);
        let units = FakeUnits::new("active", true);
        let mut q = quiescer(units.clone(), UnitMode::Freeze, cgroups.path());
        q.check(&[]).await.unwrap();
        assert!(units.calls().is_empty(), "preflight touches nothing");
        q.prepare().await.unwrap();
        q.resume().await.unwrap();
        assert_eq!(units.calls(), ["freeze app.service", "thaw app.service"]);
    }

    #[tokio::test]
    async fn a_freeze_that_failed_is_not_thawed() {
        let cgroups = cgroup_v2(true);
        let units = Arc::new(FakeUnits {
            fail_freeze: true,
            ..Arc::into_inner(FakeUnits::new("active", true)).unwrap()
        });
        let mut q = quiescer(units.clone(), UnitMode::Freeze, cgroups.path());
        assert!(q
            .prepare()
            .await
            .unwrap_err()
            .message()
            .contains("does not support freezing"));
        q.resume().await.unwrap();
        assert_eq!(units.calls(), ["freeze app.service"]);
    }

    #[tokio::test]
    async fn stop_mode_stops_then_starts() {
        let cgroups = cgroup_v2(false);
        let units = FakeUnits::new("active", false);
        let mut q = quiescer(units.clone(), UnitMode::Stop, cgroups.path());
        q.check(&[]).await.unwrap();
        q.prepare().await.unwrap();
        q.resume().await.unwrap();
        assert_eq!(units.calls(), ["stop app.service", "start app.service"]);
    }

    #[tokio::test]
    async fn preflight_says_why_a_unit_cannot_be_frozen() {
        let v2 = cgroup_v2(true);
        let no_freeze_file = cgroup_v2(false);
        let hybrid = tempfile::tempdir().unwrap();
        let cases: [(&str, bool, &Path, &str); 4] = [
            ("inactive", true, v2.path(), "not active"),
            ("active", false, v2.path(), "cannot freeze this unit"),
            ("active", true, hybrid.path(), "unified cgroup hierarchy"),
            ("active", true, no_freeze_file.path(), "no cgroup.freeze"),
        ];
        for (active, can_freeze, cgroups, expected) in cases {
            let units = FakeUnits::new(active, can_freeze);
            let err = quiescer(units.clone(), UnitMode::Freeze, cgroups)
                .check(&[])
                .await
                .unwrap_err();
            assert!(err.message().contains(expected), "{active}/{can_freeze}: {err}");
            assert!(units.calls().is_empty());
        }
        let units = FakeUnits::new("active", true);
        units.state.lock().unwrap().freezer_state = "frozen".into();
        let err = quiescer(units, UnitMode::Freeze, v2.path())
            .check(&[])
            .await
            .unwrap_err();
        assert!(err.message().contains("already frozen"), "{err}");
    }
}
