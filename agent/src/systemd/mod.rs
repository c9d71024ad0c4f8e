//! systemd over D-Bus (org.freedesktop.systemd1): list the units that run databases, and
//! freeze, thaw, stop and start one. The [`Units`] trait is what the rest of the agent sees;
//! [`SystemdUnits`] is the real one, tests use doubles or a real systemd in a container.

pub mod discovery;

use crate::dbus;
use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ScopeProxy, ServiceProxy, UnitProxy};

/// A failed systemd call, in words for the user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SystemdError {
    #[error("systemd is not reachable: {0}")]
    Unreachable(String),
    #[error("unit {unit}: {message}")]
    Unit { unit: String, message: String },
}

/// A loaded unit as systemd describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub name: String,
    /// `loaded`, `not-found`, `masked`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, ...
    pub active_state: String,
    /// `running`, `frozen`, `freezing`, `thawing`.
    pub freezer_state: String,
    /// Whether systemd can freeze this kind of unit at all.
    pub can_freeze: bool,
    /// The unit's cgroup, such as `/system.slice/redis-server.service`.
    pub control_group: String,
    /// The service's main process, if it is a service that has one.
    pub main_pid: Option<u32>,
}

/// The systemd operations the agent needs.
#[async_trait::async_trait]
pub trait Units: Send + Sync {
    /// Active (or reloading) units whose names match any of `patterns` (shell globs).
    async fn list_active(&self, patterns: &[&str]) -> Result<Vec<UnitState>, SystemdError>;
    /// The unit's current state; `load_state` says whether it exists.
    async fn describe(&self, unit: &str) -> Result<UnitState, SystemdError>;
    /// Freezes the unit's processes (cgroup freezer); returns once they are frozen.
    async fn freeze(&self, unit: &str) -> Result<(), SystemdError>;
    async fn thaw(&self, unit: &str) -> Result<(), SystemdError>;
    /// Stops the unit and waits until its stop job finished with `done`.
    async fn stop(&self, unit: &str) -> Result<(), SystemdError>;
    /// Starts the unit and waits until its start job finished with `done`.
    async fn start(&self, unit: &str) -> Result<(), SystemdError>;
}

/// The real systemd, on the system bus.
pub struct SystemdUnits {
    connection: zbus::Connection,
}

impl SystemdUnits {
    /// Connects to the system bus and checks that systemd answers there.
    pub async fn connect() -> Result<Self, SystemdError> {
        let connection = dbus::system_bus()
            .await
            .map_err(|e| SystemdError::Unreachable(e.to_string()))?;
        Self::on(connection).await
    }

    /// Uses an existing connection (one bus, shared with logind and the agent's service).
    pub async fn on(connection: zbus::Connection) -> Result<Self, SystemdError> {
        let units = SystemdUnits { connection };
        units.manager().await?.version().await.map_err(|e| {
            SystemdError::Unreachable(format!("systemd does not answer on the system bus: {e}"))
        })?;
        Ok(units)
    }

    async fn manager(&self) -> Result<ManagerProxy<'static>, SystemdError> {
        ManagerProxy::builder(&self.connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| SystemdError::Unreachable(e.to_string()))
    }

    async fn state_at(&self, name: &str, path: zbus::OwnedObjectPath) -> Result<UnitState, SystemdError> {
        let fail = |e: zbus::Error| unit_error(name, e);
        let unit = UnitProxy::builder(&self.connection)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(fail)?;
        // The cgroup and main process are properties of the unit type's own interface.
        let (control_group, main_pid) = if name.ends_with(".service") {
            let service = ServiceProxy::builder(&self.connection)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(fail)?;
            let pid = service.main_pid().await.map_err(fail)?;
            (
                service.control_group().await.unwrap_or_default(),
                Some(pid).filter(|p| *p != 0),
            )
        } else if name.ends_with(".scope") {
            let scope = ScopeProxy::builder(&self.connection)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(fail)?;
            (scope.control_group().await.unwrap_or_default(), None)
        } else {
            (String::new(), None)
        };
        Ok(UnitState {
            name: name.to_string(),
            load_state: unit.load_state().await.map_err(fail)?,
            active_state: unit.active_state().await.map_err(fail)?,
            freezer_state: unit.freezer_state().await.map_err(fail)?,
            can_freeze: unit.can_freeze().await.map_err(fail)?,
            control_group,
            main_pid,
        })
    }

    /// Queues `start` or `stop` and waits for the job's end. The JobRemoved stream is set up
    /// before the call: the call only queues the job, which may finish before it returns.
    async fn run_job(&self, unit: &str, verb: Verb) -> Result<(), SystemdError> {
        let fail = |e: zbus::Error| unit_error(unit, e);
        let manager = self.manager().await?;
        manager.subscribe().await.map_err(fail)?;
        let mut removed = manager.receive_job_removed().await.map_err(fail)?;
        let job = match verb {
            Verb::Start => manager.start_unit(unit.to_string(), "replace".into()).await,
            Verb::Stop => manager.stop_unit(unit.to_string(), "replace".into()).await,
        }
        .map_err(fail)?;
        let result = loop {
            let Some(signal) = removed.next().await else {
                break Err(SystemdError::Unit {
                    unit: unit.to_string(),
                    message: "the bus connection closed before the job finished".into(),
                });
            };
            let Ok(args) = signal.args() else { continue };
            if args.job.as_str() == job.as_str() {
                break if args.result == "done" {
                    Ok(())
                } else {
                    Err(SystemdError::Unit {
                        unit: unit.to_string(),
                        message: format!("{} job ended with `{}`, not `done`", verb.as_str(), args.result),
                    })
                };
            }
        };
        // Other clients may still be subscribed; systemd counts subscriptions per client.
        let _ = manager.unsubscribe().await;
        result
    }
}

#[derive(Clone, Copy)]
enum Verb {
    Start,
    Stop,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
        }
    }
}

fn unit_error(unit: &str, e: zbus::Error) -> SystemdError {
    let message = match &e {
        zbus::Error::MethodError(name, Some(text), _) => format!("{text} ({name})"),
        other => other.to_string(),
    };
    SystemdError::Unit {
        unit: unit.to_string(),
        message,
    }
}

/// Stands in for systemd where it cannot be reached: every call fails with the reason, so a
/// `[[quiescer]]` that needs systemd fails in preflight and says why.
pub struct Unreachable(pub String);

#[async_trait::async_trait]
impl Units for Unreachable {
    async fn list_active(&self, _patterns: &[&str]) -> Result<Vec<UnitState>, SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
    async fn describe(&self, _unit: &str) -> Result<UnitState, SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
    async fn freeze(&self, _unit: &str) -> Result<(), SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
    async fn thaw(&self, _unit: &str) -> Result<(), SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
    async fn stop(&self, _unit: &str) -> Result<(), SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
    async fn start(&self, _unit: &str) -> Result<(), SystemdError> {
        Err(SystemdError::Unreachable(self.0.clone()))
    }
}

/// systemd on the system bus, or a stand-in that says why it is not there.
pub async fn connect_or_unreachable(bus: Option<&zbus::Connection>) -> std::sync::Arc<dyn Units> {
    let connected = match bus {
        Some(bus) => SystemdUnits::on(bus.clone()).await,
        None => SystemdUnits::connect().await,
    };
    match connected {
        Ok(units) => std::sync::Arc::new(units),
        Err(e) => std::sync::Arc::new(Unreachable(e.to_string())),
    }
}

#[async_trait::async_trait]
impl Units for SystemdUnits {
    async fn list_active(&self, patterns: &[&str]) -> Result<Vec<UnitState>, SystemdError> {
        let manager = self.manager().await?;
        let listed = manager
            .list_units_by_patterns(
                vec!["active".into(), "reloading".into()],
                patterns.iter().map(|p| p.to_string()).collect(),
            )
            .await
            .map_err(|e| SystemdError::Unreachable(format!("ListUnitsByPatterns failed: {e}")))?;
        let mut units = Vec::with_capacity(listed.len());
        for (name, _description, _load, _active, _sub, _following, path, ..) in listed {
            units.push(self.state_at(&name, path).await?);
        }
        units.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(units)
    }

    async fn describe(&self, unit: &str) -> Result<UnitState, SystemdError> {
        let path = self
            .manager()
            .await?
            .load_unit(unit.to_string())
            .await
            .map_err(|e| unit_error(unit, e))?;
        self.state_at(unit, path).await
    }

    async fn freeze(&self, unit: &str) -> Result<(), SystemdError> {
        let manager = self.manager().await?;
        manager
            .freeze_unit(unit.to_string())
            .await
            .map_err(|e| unit_error(unit, e))
    }

    async fn thaw(&self, unit: &str) -> Result<(), SystemdError> {
        let manager = self.manager().await?;
        manager
            .thaw_unit(unit.to_string())
            .await
            .map_err(|e| unit_error(unit, e))
    }

    async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, Verb::Stop).await
    }

    async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_job(unit, Verb::Start).await
    }
}
