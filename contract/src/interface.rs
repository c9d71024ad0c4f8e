//! `org.freezeframe.Agent1` as its clients see it: the bus name, the object, the typed errors,
//! and the proxy with its signal streams. The agent serves the same interface
//! (`freezeframe_agent`'s service); a unit test there calls every method, property and signal
//! of this proxy against the served object, so the two cannot drift apart unnoticed.

use crate::status::{RecoveredFilesystem, RecoveredResume};
use crate::wire::Dict;

/// The agent's well-known name on the system bus.
pub const BUS_NAME: &str = "org.freezeframe.Agent1";
/// The one object the agent serves.
pub const OBJECT_PATH: &str = "/org/freezeframe/Agent1";

/// The errors callers get, as typed D-Bus errors (`org.freezeframe.Agent1.Error.Busy`, …).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freezeframe.Agent1.Error")]
pub enum AgentError {
    #[zbus(error)]
    /// The bus failed (on the caller's side: a proxy's call).
    ZBus(zbus::Error),
    /// A snapshot is already running (the binaries exit [`crate::Exit::Busy`] for it).
    Busy(String),
    /// An argument of the wrong type, an unknown option, a bad name.
    InvalidArgs(String),
    /// The caller may not call this method.
    AccessDenied(String),
    /// The configuration or the provider failed.
    Failed(String),
}

/// The interface, as a client calls it: `Agent1Proxy` (async). Each method's documentation is
/// the agent's (docs/src/dbus.md); answers typed `a{sv}` are read back with
/// [`crate::wire::from_dict`].
#[zbus::proxy(
    interface = "org.freezeframe.Agent1",
    default_service = "org.freezeframe.Agent1",
    default_path = "/org/freezeframe/Agent1"
)]
pub trait Agent1 {
    /// Starts a snapshot (options `name`, `wait`, `dry-run`); returns its job id at once.
    fn snapshot(&self, options: Dict) -> Result<u64, AgentError>;

    /// Starts this machine's part of a consistency group's snapshot (options `group`, `wait`,
    /// `max-freeze-ms`, `timeout-ms`); returns its job id.
    fn prepare(&self, options: Dict) -> Result<u64, AgentError>;

    /// The coordinator's word to group job `job`, waiting in phase `ready`: freeze.
    fn freeze(&self, job: u64) -> Result<(), AgentError>;

    /// The coordinator's word to group job `job`, waiting in phase `hold`: request.
    fn commit(&self, job: u64) -> Result<(), AgentError>;

    /// Aborts group job `job` before its commit, giving `reason`.
    fn abort(&self, job: u64, reason: &str) -> Result<(), AgentError>;

    /// What a snapshot would freeze and quiesce: a [`crate::SnapshotPlan`].
    fn plan(&self) -> Result<Dict, AgentError>;

    /// The agent's state: an [`crate::AgentStatus`].
    fn status(&self) -> Result<Dict, AgentError>;

    /// This machine's snapshots, oldest first: each a [`crate::SnapshotInfo`].
    fn list_snapshots(&self) -> Result<Vec<Dict>, AgentError>;

    /// Deletes this machine's snapshots of the consistency groups `groups`; each deleted a
    /// [`crate::Pruned`].
    fn delete_groups(&self, groups: Vec<String>) -> Result<Vec<Dict>, AgentError>;

    /// Deletes all but the newest `keep_last` of this machine's snapshots; each deleted a
    /// [`crate::Pruned`].
    fn prune(&self, keep_last: u32) -> Result<Vec<Dict>, AgentError>;

    /// What `Prune(keep_last)` would delete now, deleting nothing: the same selection.
    fn prune_dry_run(&self, keep_last: u32) -> Result<Vec<Dict>, AgentError>;

    /// What `DeleteGroups(groups)` would delete now, deleting nothing: the same selection.
    fn delete_groups_dry_run(&self, groups: Vec<String>) -> Result<Vec<Dict>, AgentError>;

    /// Thaws what a dead agent's record lists and runs the resumes it owed.
    fn thaw(&self) -> Result<(Vec<RecoveredFilesystem>, Vec<RecoveredResume>), AgentError>;

    /// Every preflight check on its own: each a [`crate::Check`].
    fn check(&self) -> Result<Vec<Dict>, AgentError>;

    /// The id of the snapshot job running now; 0 when none.
    #[zbus(property)]
    fn running_job(&self) -> zbus::Result<u64>;

    /// The phase the running job is in; empty when none runs.
    #[zbus(property)]
    fn job_phase(&self) -> zbus::Result<String>;

    /// Whether a run's filesystems are frozen now.
    #[zbus(property)]
    fn frozen(&self) -> zbus::Result<bool>;

    /// The last run's report (a [`crate::Report`]); empty before the first run.
    #[zbus(property)]
    fn last_result(&self) -> zbus::Result<Dict>;

    /// The agent's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;

    /// A phase of `job` started (`finished` false) or finished, with its duration and outcome.
    #[zbus(signal)]
    fn phase_changed(
        &self,
        job: u64,
        phase: &str,
        finished: bool,
        ok: bool,
        elapsed_ms: f64,
    ) -> zbus::Result<()>;

    /// `job` ended; `report` is its [`crate::Report`] (for a dry run, the plan).
    #[zbus(signal)]
    fn job_finished(&self, job: u64, succeeded: bool, report: Dict) -> zbus::Result<()>;
}
