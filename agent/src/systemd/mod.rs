//! systemd over D-Bus (org.freedesktop.systemd1): list the units that run databases, and
//! freeze, thaw, stop and start one. The [`Units`] trait is what the rest of the agent sees;
//! [`SystemdUnits`] is the real one, tests use doubles or a real systemd in a container.

pub(crate) mod discovery;

use crate::dbus;
use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::{ManagerProxy, ScopeProxy, ServiceProxy, UnitProxy};

/// A failed systemd call, in words for the user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SystemdError {
    #[error("systemd is not reachable: {0}")]
    Unreachable(String),
    #[error("unit {unit}: {message}")]
    Unit { unit: String, message: String },
}

/// A loaded unit as systemd describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct UnitState {
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
pub(crate) trait Units: Send + Sync {
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
    /// Runs a program once as a transient service, in the host's own environment rather than
    /// the caller's sandbox, and returns its exit status once its main process exited. The unit
    /// stays, with whatever the program left running, until [`Units::stop`].
    async fn run_transient(&self, run: TransientRun<'_>) -> Result<i32, TransientError> {
        drop(run);
        Err(TransientError::NotStarted(SystemdError::Unreachable(
            "no systemd to run transient units".into(),
        )))
    }
    /// Starts a program as a transient service (`Type=exec`) that ends when its main process
    /// does, and returns once it runs: for a client whose pipes the agent keeps talking through.
    async fn start_transient(&self, run: TransientRun<'_>) -> Result<(), TransientError> {
        drop(run);
        Err(TransientError::NotStarted(SystemdError::Unreachable(
            "no systemd to run transient units".into(),
        )))
    }
}

/// Why a transient unit did not run to its end.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TransientError {
    /// systemd would not start it: nothing ran.
    #[error("{0}")]
    NotStarted(SystemdError),
    /// It ran past its timeout, and systemd killed it.
    #[error("it did not finish in time and was killed")]
    TimedOut,
    /// It started, and then its end could not be told.
    #[error("{0}")]
    Lost(SystemdError),
}

/// The real systemd, on the system bus.
pub(crate) struct SystemdUnits {
    connection: zbus::Connection,
}

impl SystemdUnits {
    /// Connects to the system bus and checks that systemd answers there.
    pub(crate) async fn connect() -> Result<Self, SystemdError> {
        let connection = dbus::system_bus()
            .await
            .map_err(|e| SystemdError::Unreachable(e.to_string()))?;
        Self::on(connection).await
    }

    /// Uses an existing connection (one bus, shared with logind and the agent's service).
    pub(crate) async fn on(connection: zbus::Connection) -> Result<Self, SystemdError> {
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

    /// Queues `start` or `stop` and waits for the job's end, which must be `done`.
    async fn run_job(&self, unit: &str, verb: Verb) -> Result<(), SystemdError> {
        let name = verb.as_str();
        match self.queue_and_wait(unit, verb).await?? {
            result if result == "done" => Ok(()),
            result => Err(SystemdError::Unit {
                unit: unit.to_string(),
                message: format!("{name} job ended with `{result}`, not `done`"),
            }),
        }
    }

    /// Queues the job and returns systemd's word for how it ended (`done`, `failed`,
    /// `timeout`, …). The JobRemoved stream is set up before the call: the call only queues the
    /// job, which may finish before it returns.
    async fn queue_and_wait(
        &self,
        unit: &str,
        verb: Verb,
    ) -> Result<Result<String, SystemdError>, SystemdError> {
        let fail = |e: zbus::Error| unit_error(unit, e);
        let manager = self.manager().await?;
        manager.subscribe().await.map_err(fail)?;
        let mut removed = manager.receive_job_removed().await.map_err(fail)?;
        let job = match verb {
            Verb::Start => manager.start_unit(unit.to_string(), "replace".into()).await,
            Verb::Stop => manager.stop_unit(unit.to_string(), "replace".into()).await,
            Verb::StartTransient(properties) => {
                manager
                    .start_transient_unit(unit.to_string(), "fail".into(), properties, Vec::new())
                    .await
            }
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
                break Ok(args.result.to_string());
            }
        };
        // Other clients may still be subscribed; systemd counts subscriptions per client.
        let _ = manager.unsubscribe().await;
        Ok(result)
    }

    /// The exit status of a service's main process, once it has exited.
    async fn exit_status(&self, unit: &str) -> Result<i32, SystemdError> {
        let fail = |e: zbus::Error| unit_error(unit, e);
        let path = self
            .manager()
            .await?
            .get_unit(unit.to_string())
            .await
            .map_err(fail)?;
        ServiceProxy::builder(&self.connection)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(fail)?
            .exec_main_status()
            .await
            .map_err(fail)
    }
}

enum Verb {
    Start,
    Stop,
    /// StartTransientUnit with these properties.
    StartTransient(Vec<(String, zbus::OwnedVariant)>),
}

impl Verb {
    fn as_str(&self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::StartTransient(_) => "start",
        }
    }
}

/// What a transient unit should run, and how.
pub(crate) struct TransientRun<'a> {
    /// The unit's name, ending in `.service`.
    pub unit: &'a str,
    pub description: String,
    /// The program and its arguments (`argv[0]` first).
    pub argv: Vec<String>,
    /// Where its standard output goes.
    pub output: std::os::fd::OwnedFd,
    /// Its standard input (`/dev/null` when `None`).
    pub input: Option<std::os::fd::OwnedFd>,
    /// Where its standard error goes (with its output when `None`).
    pub errors: Option<std::os::fd::OwnedFd>,
    /// Whether the unit stays, with what the program left running, once it exited (until
    /// [`Units::stop`]); otherwise it goes with its main process.
    pub remain_after_exit: bool,
    /// systemd kills it (and fails the job) past this.
    pub timeout: std::time::Duration,
    /// systemd stops it this long after it started, whatever it does (`RuntimeMaxSec=`): a
    /// bound that holds when the agent that should stop it is gone.
    pub runtime_max: Option<std::time::Duration>,
}

/// The properties of a transient service of `service_type` that runs `run.argv` with the
/// standard descriptors `run` gives it.
fn transient_properties(
    run: TransientRun<'_>,
    service_type: &str,
) -> Result<Vec<(String, zbus::OwnedVariant)>, std::io::Error> {
    let value = |v: zbus::Variant<'static>| zbus::OwnedVariant::try_from(v).map_err(std::io::Error::other);
    let fd = |fd: std::os::fd::OwnedFd| value(zbus::Fd::from(fd).into());
    let stderr = match run.errors {
        Some(errors) => errors,
        None => run.output.try_clone()?,
    };
    let exec = vec![(run.argv[0].clone(), run.argv.clone(), false)];
    let mut properties = vec![
        ("Description".into(), value(run.description.into())?),
        ("Type".into(), value(service_type.to_string().into())?),
        ("RemainAfterExit".into(), value(run.remain_after_exit.into())?),
        ("ExecStart".into(), value(exec.into())?),
        ("StandardOutputFileDescriptor".into(), fd(run.output)?),
        ("StandardErrorFileDescriptor".into(), fd(stderr)?),
        (
            "TimeoutStartUSec".into(),
            value((run.timeout.as_micros() as u64).into())?,
        ),
        ("CollectMode".into(), value("inactive-or-failed".into())?),
    ];
    if let Some(input) = run.input {
        properties.push(("StandardInputFileDescriptor".into(), fd(input)?));
    }
    if let Some(max) = run.runtime_max {
        properties.push(("RuntimeMaxUSec".into(), value((max.as_micros() as u64).into())?));
    }
    Ok(properties)
}

/// A transient unit whose properties could not be put together: nothing ran.
fn not_started(unit: &str, e: std::io::Error) -> TransientError {
    TransientError::NotStarted(SystemdError::Unit {
        unit: unit.to_string(),
        message: e.to_string(),
    })
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
pub(crate) struct Unreachable(pub String);

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
pub(crate) async fn connect_or_unreachable(bus: Option<&zbus::Connection>) -> std::sync::Arc<dyn Units> {
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

    async fn start_transient(&self, run: TransientRun<'_>) -> Result<(), TransientError> {
        let unit = run.unit.to_string();
        let properties = transient_properties(run, "exec").map_err(|e| not_started(&unit, e))?;
        let started = self
            .queue_and_wait(&unit, Verb::StartTransient(properties))
            .await
            .map_err(TransientError::NotStarted)?
            .map_err(TransientError::Lost)?;
        match started.as_str() {
            "done" => Ok(()),
            // Nothing runs: an exec that failed, or a unit systemd would not start.
            other => Err(TransientError::NotStarted(SystemdError::Unit {
                unit,
                message: format!("its start job ended with `{other}`"),
            })),
        }
    }

    async fn run_transient(&self, run: TransientRun<'_>) -> Result<i32, TransientError> {
        let unit = run.unit.to_string();
        let properties = transient_properties(run, "oneshot").map_err(|e| not_started(&unit, e))?;
        let ended = self
            .queue_and_wait(&unit, Verb::StartTransient(properties))
            .await
            .map_err(TransientError::NotStarted)?
            .map_err(TransientError::Lost)?;
        match ended.as_str() {
            "done" => Ok(0),
            "timeout" => Err(TransientError::TimedOut),
            // It ran and exited non-zero (its status says how), or never got to run.
            other => match self.exit_status(&unit).await {
                Ok(status) if status != 0 => Ok(status),
                _ => Err(TransientError::Lost(SystemdError::Unit {
                    unit: unit.clone(),
                    message: format!("its start job ended with `{other}`"),
                })),
            },
        }
    }
}
