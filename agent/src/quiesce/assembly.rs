//! Which quiescers a run gets, in prepare order: the hook scripts, each `[[quiescer]]`, then
//! (with `auto`) the database units systemd runs that no `[[quiescer]]` covers, each with its
//! native quiescer, and the databases running in containers (`container.rs`). `plan` prints the
//! same list.

use super::auto::{Detected, Handler, Proc};
use super::client::Clients;
use super::container::{Discovered, InContainer};
use super::container_pause::PausedContainer;
use super::hooks::{self, HookDir};
use super::mysql::Mysql;
use super::postgres::Postgres;
use super::redis::Redis;
use super::systemd_unit::SystemdUnit;
use crate::config::{QuiesceSettings, QuiescerSettings, DEFAULT_MAX_FREEZE, DEFAULT_QUIESCER_TIMEOUT};
use crate::systemd::discovery::{self, DatabaseKind};
use crate::systemd::{SystemdError, Units};
use crate::transaction::ports::{DatabaseEndpoint, LogPosition, QuiesceError, Quiescer, Target};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What detection found, or why there is nothing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detection {
    /// `auto = false`.
    Off,
    /// No systemd to ask (no system bus, or not systemd's): nothing to detect.
    NoSystemd(String),
    /// systemd answered but listing its units failed: databases may run unquiesced.
    Failed(String),
    Found(Vec<Detected>),
}

/// The quiescers of one run, before they are built.
pub(crate) struct QuiescePlan {
    pub hooks_dir: PathBuf,
    pub hook_timeout: Duration,
    /// The hooks that would run and the files passed over, or why the directory is refused.
    pub hooks: Result<hooks::Discovered, QuiesceError>,
    pub configured: Vec<QuiescerSettings>,
    pub detection: Detection,
    /// What the containers get (with `auto`, or a `[[quiescer]] kind = "container"`).
    pub containers: Discovered,
    units: Arc<dyn Units>,
    /// Where frozen units are recorded until thawed.
    runtime_dir: Option<PathBuf>,
    /// The longest a freeze lasts, which bounds how long a lock session may live.
    max_freeze: Duration,
}

impl QuiescePlan {
    /// Reads the hooks directory and, with `auto`, asks systemd which databases run.
    pub(crate) async fn discover(settings: &QuiesceSettings, units: Arc<dyn Units>) -> QuiescePlan {
        let detection = if !settings.auto {
            Detection::Off
        } else {
            match discovery::database_units(units.as_ref()).await {
                Ok(found) => {
                    let proc = Proc::default();
                    Detection::Found(
                        found
                            .into_iter()
                            .map(|db| Detected {
                                handler: if covered(&settings.quiescers, &db.unit.name, db.kind) {
                                    Handler::Configured
                                } else {
                                    proc.handler(&db, DEFAULT_QUIESCER_TIMEOUT)
                                },
                                unit: db.unit.name.clone(),
                                kind: db.kind,
                                main_pid: db.unit.main_pid.unwrap_or(0),
                            })
                            .collect(),
                    )
                }
                Err(SystemdError::Unreachable(e)) => Detection::NoSystemd(e),
                Err(e) => Detection::Failed(e.to_string()),
            }
        };
        let containers = if settings.auto || !settings.containers.is_empty() {
            let engines = crate::container::engines(&settings.container_sockets);
            let engines = engines.into_iter().map(Arc::from).collect();
            super::container::discover(engines, &settings.containers, settings.auto).await
        } else {
            Discovered::default()
        };
        QuiescePlan {
            containers,
            hooks_dir: settings.hooks_dir.clone(),
            hook_timeout: settings.hook_timeout,
            hooks: hooks::discover(&settings.hooks_dir),
            configured: settings.quiescers.clone(),
            detection,
            units,
            runtime_dir: None,
            max_freeze: DEFAULT_MAX_FREEZE,
        }
    }

    /// Frozen or stopped units and prepared hooks are recorded in `runtime_dir` until resumed.
    pub(crate) fn recording_in(mut self, runtime_dir: PathBuf) -> Self {
        self.runtime_dir = Some(runtime_dir);
        self
    }

    /// Freezes last at most `max_freeze` (`freeze.max_freeze`).
    pub(crate) fn frozen_at_most(mut self, max_freeze: Duration) -> Self {
        self.max_freeze = max_freeze;
        self
    }

    /// The detected units that get their native quiescer.
    pub(crate) fn native(&self) -> impl Iterator<Item = (&Detected, &QuiescerSettings)> {
        let found = match &self.detection {
            Detection::Found(found) => found.as_slice(),
            _ => &[],
        };
        found.iter().filter_map(|d| match &d.handler {
            Handler::Native(settings) => Some((d, settings)),
            _ => None,
        })
    }

    /// Applications running that nothing quiesces, each with why and what to do.
    pub(crate) fn unquiesced(&self) -> Vec<String> {
        let mut found = self.units_unquiesced();
        found.extend(self.containers.problems.iter().cloned());
        found.extend(
            self.containers
                .databases
                .iter()
                .filter_map(|c| Some(format!("{}: {}", c.label(), c.unhandled.as_ref()?))),
        );
        found
    }

    fn units_unquiesced(&self) -> Vec<String> {
        match &self.detection {
            Detection::Failed(e) => vec![format!("cannot list the database units: {e}")],
            Detection::Found(found) => found
                .iter()
                .filter_map(|d| match &d.handler {
                    Handler::Unhandled(why) => Some(format!("{} ({}): {why}", d.unit, d.kind.as_str())),
                    _ => None,
                })
                .collect(),
            Detection::Off | Detection::NoSystemd(_) => Vec::new(),
        }
    }

    /// Builds the quiescers, in prepare order.
    pub(crate) fn quiescers(&self) -> Vec<Box<dyn Quiescer>> {
        let mut list: Vec<Box<dyn Quiescer>> = Vec::new();
        // Hooks first (they quiesce the applications that write to the databases), resumed
        // last. An empty or missing directory quiesces nothing; a refused one fails preflight.
        if !matches!(&self.hooks, Ok(found) if found == &hooks::Discovered::default()) {
            list.push(Box::new(
                HookDir::new(self.hooks_dir.clone(), self.hook_timeout)
                    .recorded_in(self.runtime_dir.clone())
                    .run_through(self.units.clone()),
            ));
        }
        // Containers paused next: like hooks, they may hold the applications that write to
        // the databases quiesced after them.
        for target in &self.containers.paused {
            list.push(Box::new(PausedContainer::new(
                target.clone(),
                self.runtime_dir.clone(),
            )));
        }
        for settings in &self.configured {
            list.push(build(
                settings,
                &self.units,
                self.runtime_dir.as_deref(),
                self.max_freeze,
            ));
        }
        for (detected, settings) in self.native() {
            let inner = build(
                settings,
                &self.units,
                self.runtime_dir.as_deref(),
                self.max_freeze,
            );
            list.push(Box::new(ForUnit {
                name: format!("{} ({})", detected.kind.as_str(), detected.unit),
                inner,
            }));
        }
        for found in self.containers.databases.iter().filter(|c| c.unhandled.is_none()) {
            list.push(Box::new(InContainer::new(
                found.clone(),
                DEFAULT_QUIESCER_TIMEOUT,
            )));
        }
        list
    }
}

/// Whether a `[[quiescer]]` already handles this unit: one of the same kind, or a systemd one
/// naming it. The configuration wins over detection.
fn covered(configured: &[QuiescerSettings], unit: &str, kind: DatabaseKind) -> bool {
    configured.iter().any(|q| match q {
        QuiescerSettings::Systemd { unit: u, .. } => u == unit,
        other => other.kind() == kind.as_str(),
    })
}

/// The quiescer for one `[[quiescer]]`.
pub(crate) fn build(
    settings: &QuiescerSettings,
    units: &Arc<dyn Units>,
    runtime_dir: Option<&std::path::Path>,
    max_freeze: Duration,
) -> Box<dyn Quiescer> {
    match settings {
        QuiescerSettings::Redis {
            endpoint,
            password_file,
            timeout,
        } => Box::new(Redis::new(endpoint.clone(), password_file.clone(), *timeout)),
        QuiescerSettings::Postgresql {
            socket_dir,
            port,
            os_user,
            checkpoint,
            timeout,
        } => Box::new(
            Postgres::new(socket_dir.clone(), *port, os_user.clone(), *checkpoint, *timeout)
                .run_through(Clients::through(units.clone())),
        ),
        QuiescerSettings::Mariadb {
            socket,
            login,
            lock_wait_timeout,
            timeout,
        } => Box::new(
            Mysql::new(socket.clone(), login.clone(), *lock_wait_timeout, *timeout)
                .frozen_at_most(max_freeze)
                .run_through(Clients::through(units.clone())),
        ),
        QuiescerSettings::Systemd { unit, mode, timeout } => {
            let quiescer = SystemdUnit::new(unit.clone(), *mode, units.clone(), *timeout);
            Box::new(match runtime_dir {
                Some(dir) => quiescer.recorded_in(dir.to_path_buf()),
                None => quiescer,
            })
        }
    }
}

/// A native quiescer found through its systemd unit, reported under the unit's name.
struct ForUnit {
    name: String,
    inner: Box<dyn Quiescer>,
}

#[async_trait::async_trait]
impl Quiescer for ForUnit {
    fn name(&self) -> &str {
        &self.name
    }
    fn prepare_timeout(&self) -> Duration {
        self.inner.prepare_timeout()
    }
    fn resume_timeout(&self) -> Duration {
        self.inner.resume_timeout()
    }
    fn details(&self) -> Option<String> {
        self.inner.details()
    }
    fn log_position(&self) -> Option<LogPosition> {
        self.inner.log_position()
    }
    fn endpoint(&self) -> Option<DatabaseEndpoint> {
        self.inner.endpoint()
    }
    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError> {
        self.inner.check(targets).await
    }
    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        self.inner.prepare().await
    }
    async fn resume(&mut self) -> Result<(), QuiesceError> {
        self.inner.resume().await
    }
}
