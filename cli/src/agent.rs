//! The agent's calls, each against one agent, and how their answers come back: a snapshot with
//! live progress, the plan, status, the snapshot list, pruning, a group's deletion, the thaw;
//! every answer read back into the agent's own types, every failure into a [`Failure`] that says
//! what to do and with which exit.

use crate::client::{self, Agent1Proxy, Target, Unreachable};
use crate::progress::Progress;
use freezeframe_contract::wire::{self, Dict};
use freezeframe_contract::Recovered;
use freezeframe_contract::{AgentError, AgentStatus};
use freezeframe_contract::{DryRun, SnapshotPlan};
use freezeframe_contract::{Pruned, SnapshotInfo};
use freezeframe_contract::{Report, Status};
use futures_util::StreamExt;
use std::collections::HashMap;
use zbus::OwnedVariant;

/// Exit codes: the table both binaries share (0 success, 1 the snapshot or call failed, 2 usage
/// or configuration error, 3 the agent could not be reached, 75 the agent is busy).
pub use freezeframe_contract::Exit;

/// A failure, with what to do about it, and its exit code.
#[derive(Debug, Clone)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    /// Which step failed, for `--json`: `ssh`, `remote-bus`, `bus`, `agent`, `authorisation`.
    pub step: Option<&'static str>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            step: None,
        }
    }

    fn at(self, step: &'static str) -> Failure {
        Failure {
            step: Some(step),
            ..self
        }
    }
}

impl From<client::Unreachable> for Failure {
    fn from(e: client::Unreachable) -> Failure {
        Failure::new(e.exit(), e.to_string()).at(e.cause.step())
    }
}

/// Turns a failed call into a message that says what to do, by the agent's typed errors.
pub(crate) fn call_failure(target: &Target, e: AgentError) -> Failure {
    match e {
        AgentError::ZBus(e) => bus_failure(target, e),
        AgentError::InvalidArgs(m) => Failure::new(Exit::Usage, format!("{target}: {m}")),
        AgentError::AccessDenied(m) => Unreachable::denied(target, &m).into(),
        AgentError::Busy(m) => Failure::new(Exit::Busy, format!("{target}: busy: {m}")),
        AgentError::Failed(m) => Failure::new(Exit::Failed, format!("{target}: {m}")),
    }
}

/// What a failed call says about reaching the agent (the bus, the policy, the agent's own
/// refusal, its version), if it says something about that.
pub(crate) fn unreachable_of(target: &Target, e: &AgentError) -> Option<Unreachable> {
    match e {
        AgentError::ZBus(e) => Unreachable::of_call(target, e),
        AgentError::AccessDenied(m) => Some(Unreachable::denied(target, m)),
        _ => None,
    }
}

/// A call that failed on the bus, before or instead of the agent's answer: the one diagnosis
/// of an agent out of reach ([`Unreachable::of_call`]), or the call's own failure.
pub(crate) fn bus_failure(target: &Target, e: zbus::Error) -> Failure {
    match Unreachable::of_call(target, &e) {
        Some(unreachable) => unreachable.into(),
        None => Failure::new(Exit::Unreachable, format!("{target}: the call failed: {e}")).at("bus"),
    }
}

/// Reads an answer back into its type; one that does not fit comes from an agent of another
/// version.
pub(crate) fn read<T: serde::de::DeserializeOwned>(target: &Target, dict: &Dict) -> Result<T, Failure> {
    wire::from_dict(dict).map_err(|e| Unreachable::not_understood(target, e).into())
}

pub(crate) async fn proxy<'a>(
    target: &Target,
    connection: &zbus::Connection,
) -> Result<Agent1Proxy<'a>, Failure> {
    Agent1Proxy::new(connection)
        .await
        .map_err(|e| bus_failure(target, e))
}

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest {
    pub name: Option<String>,
    pub wait: bool,
    pub dry_run: bool,
}

/// How a snapshot job ended: its report, or for a dry run the plan and preflight's verdict.
#[derive(Debug, Clone)]
pub enum Finished {
    Snapshot(Box<Report>),
    DryRun(Box<DryRun>),
}

impl Finished {
    /// 0 when it succeeded (a dry run: when preflight passed); 2 when the machine's set-up is
    /// at fault (its configuration, the token file), as for any configuration error; a dry run
    /// the code the snapshot would have ended with.
    pub fn exit(&self) -> Exit {
        match self {
            Finished::DryRun(dry_run) => Exit::from_code(dry_run.preflight.exit).unwrap_or(Exit::Failed),
            Finished::Snapshot(report) => report_exit(report),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Finished::Snapshot(report) => freezeframe_contract::render::report(report),
            Finished::DryRun(dry_run) => freezeframe_contract::render::dry_run(dry_run),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Finished::Snapshot(report) => serde_json::to_value(report),
            Finished::DryRun(dry_run) => serde_json::to_value(dry_run),
        }
        .unwrap_or_default()
    }
}

/// A snapshot report's exit: 0 when it succeeded; 2 when the machine's set-up is at fault (its
/// configuration, the token file), as for any configuration error; 1 otherwise.
pub fn report_exit(report: &Report) -> Exit {
    if report.status == Status::Succeeded {
        Exit::Success
    } else if report.setup_error {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// Takes a snapshot through the agent at `target`; the report (or, for a dry run, the plan).
pub async fn snapshot(
    target: &Target,
    request: &SnapshotRequest,
    progress: &mut dyn Progress,
) -> Result<Finished, Failure> {
    let connection = client::connect(target).await?;
    let agent = proxy(target, &connection).await?;
    // Subscribed before the call, so no signal of a quick job is missed.
    let mut phases = agent
        .receive_phase_changed()
        .await
        .map_err(|e| bus_failure(target, e))?;
    let mut finished = agent
        .receive_job_finished()
        .await
        .map_err(|e| bus_failure(target, e))?;
    let option = |value: zbus::Variant<'static>| OwnedVariant::try_from(value).expect("no file descriptors");
    let mut options: HashMap<String, OwnedVariant> = HashMap::new();
    if let Some(name) = &request.name {
        options.insert("name".into(), option(name.clone().into()));
    }
    options.insert("wait".into(), option(request.wait.into()));
    options.insert("dry-run".into(), option(request.dry_run.into()));
    let job = agent
        .snapshot(options)
        .await
        .map_err(|e| call_failure(target, e))?;
    let gone = || {
        Failure::new(
            Exit::Unreachable,
            format!("{target}: the connection closed before job {job} finished"),
        )
    };
    loop {
        tokio::select! {
            signal = phases.next() => {
                let signal = signal.ok_or_else(gone)?;
                if let Ok(a) = signal.args() {
                    if a.job == job {
                        progress.phase(a.phase, a.finished, a.ok, a.elapsed_ms);
                    }
                }
            }
            signal = finished.next() => {
                let signal = signal.ok_or_else(gone)?;
                let Ok(a) = signal.args() else { continue };
                if a.job != job {
                    continue;
                }
                // Phases queued before the result still arrive first: drain them.
                while let Some(Some(signal)) = futures_util::FutureExt::now_or_never(phases.next()) {
                    if let Ok(p) = signal.args() {
                        if p.job == job {
                            progress.phase(p.phase, p.finished, p.ok, p.elapsed_ms);
                        }
                    }
                }
                progress.done();
                return if request.dry_run {
                    dry_run_answer(target, &a.report)
                } else {
                    read(target, &a.report).map(|r| Finished::Snapshot(Box::new(r)))
                };
            }
        }
    }
}

/// A dry run's answer: the plan with preflight's verdict, or the report of a dry run that
/// could not start (a bad name, an offline strategy).
fn dry_run_answer(target: &Target, answer: &Dict) -> Result<Finished, Failure> {
    match wire::from_dict::<DryRun>(answer) {
        Ok(dry_run) => Ok(Finished::DryRun(Box::new(dry_run))),
        Err(_) => read(target, answer).map(|r| Finished::Snapshot(Box::new(r))),
    }
}

pub async fn plan(target: &Target) -> Result<SnapshotPlan, Failure> {
    let connection = client::connect(target).await?;
    let plan = proxy(target, &connection)
        .await?
        .plan()
        .await
        .map_err(|e| call_failure(target, e))?;
    read(target, &plan)
}

/// The agent's status.
pub async fn status(target: &Target) -> Result<AgentStatus, Failure> {
    let connection = client::connect(target).await?;
    let status = proxy(target, &connection)
        .await?
        .status()
        .await
        .map_err(|e| call_failure(target, e))?;
    read(target, &status)
}

pub async fn list(target: &Target) -> Result<Vec<SnapshotInfo>, Failure> {
    let connection = client::connect(target).await?;
    let list = proxy(target, &connection)
        .await?
        .list_snapshots()
        .await
        .map_err(|e| call_failure(target, e))?;
    list.iter().map(|s| read(target, s)).collect()
}

/// Deletes all but the newest `keep` of the target's snapshots; with `dry_run`, says which
/// (the agent's same selection) and deletes nothing.
pub async fn prune(target: &Target, keep: u32, dry_run: bool) -> Result<Vec<Pruned>, Failure> {
    let connection = client::connect(target).await?;
    let agent = proxy(target, &connection).await?;
    let pruned = match dry_run {
        true => agent.prune_dry_run(keep).await,
        false => agent.prune(keep).await,
    }
    .map_err(|e| call_failure(target, e))?;
    pruned.iter().map(|p| read(target, p)).collect()
}

/// Deletes the target's snapshots of the groups `groups`; with `dry_run`, says which.
pub async fn delete_groups(
    target: &Target,
    groups: &[String],
    dry_run: bool,
) -> Result<Vec<Pruned>, Failure> {
    let connection = client::connect(target).await?;
    let agent = proxy(target, &connection).await?;
    let deleted = match dry_run {
        true => agent.delete_groups_dry_run(groups.to_vec()).await,
        false => agent.delete_groups(groups.to_vec()).await,
    }
    .map_err(|e| call_failure(target, e))?;
    deleted.iter().map(|p| read(target, p)).collect()
}

/// Thaws what a dead agent left on the target, through its agent.
pub async fn thaw(target: &Target) -> Result<Recovered, Failure> {
    let connection = client::connect(target).await?;
    let (filesystems, resumes) = proxy(target, &connection)
        .await?
        .thaw()
        .await
        .map_err(|e| call_failure(target, e))?;
    Ok(Recovered { filesystems, resumes })
}

/// Thaws what a dead agent left on this machine without an agent (root only): the runtime
/// directory's record and owed resumes, as `freezeframe-agent thaw` does.
pub async fn thaw_here(runtime_dir: &std::path::Path) -> Result<Recovered, Failure> {
    freezeframe_agent::thaw_leftovers(runtime_dir).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            "; run it as root"
        } else {
            ""
        };
        Failure::new(
            Exit::Failed,
            format!("cannot thaw from {}: {e}{hint}", runtime_dir.display()),
        )
    })
}
