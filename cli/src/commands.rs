//! What each command does against one agent, and how the results come back: a snapshot with
//! live progress, the plan, status, the snapshot list, pruning.

use crate::client::{self, Agent1Proxy, Target};
use freezeframe_agent::job::SnapshotPlan;
use freezeframe_agent::runtime::Recovered;
use freezeframe_agent::service::wire::{self, Dict};
use freezeframe_agent::service::{AgentError, AgentStatus};
use freezeframe_agent::transaction::ports::{DrillResult, Pruned, SnapshotInfo};
use freezeframe_agent::transaction::{Report, Status};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use zbus::OwnedVariant;

/// Exit codes: 0 success, 1 the snapshot (or call) failed, 2 usage or configuration error,
/// 3 the agent could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
}

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
        let step = e.step.map_or("bus", |s| s.as_str());
        Failure::new(Exit::Unreachable, e.to_string()).at(step)
    }
}

/// Turns a failed call into a message that says what to do, by the agent's typed errors.
pub(crate) fn call_failure(target: &Target, e: AgentError) -> Failure {
    match e {
        AgentError::ZBus(e) => bus_failure(target, e),
        AgentError::InvalidArgs(m) => Failure::new(Exit::Usage, format!("{target}: {m}")),
        AgentError::AccessDenied(m) => Failure::new(
            Exit::Failed,
            format!("{target}: access denied: {m}; run as root, or add the user to the group `freezeframe`"),
        )
        .at("authorisation"),
        AgentError::Busy(m) => Failure::new(Exit::Failed, format!("{target}: busy: {m}")),
        AgentError::Failed(m) => Failure::new(Exit::Failed, format!("{target}: {m}")),
    }
}

/// A call that failed on the bus, before or instead of the agent's answer.
pub(crate) fn bus_failure(target: &Target, e: zbus::Error) -> Failure {
    if client::is_missing_agent(&e) {
        return Failure::new(
            Exit::Unreachable,
            format!(
                "{target}: the agent is not on the bus (is the package freezeframe-agent installed, and its \
                 D-Bus activation file in place?): {e}"
            ),
        )
        .at("agent");
    }
    if client::is_bus_refusal(&e) {
        return Failure::new(
            Exit::Failed,
            format!(
                "{target}: access denied by the bus policy ({e}); run as root, or add the user to the \
                 group `freezeframe`"
            ),
        )
        .at("authorisation");
    }
    Failure::new(Exit::Unreachable, format!("{target}: the call failed: {e}")).at("bus")
}

/// Reads an answer back into its type; one that does not fit comes from an agent of another
/// version.
pub(crate) fn read<T: serde::de::DeserializeOwned>(target: &Target, dict: &Dict) -> Result<T, Failure> {
    wire::from_dict(dict).map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!(
                "{target}: the agent's answer is not understood ({e}); install the same version of \
                 freezeframe and freezeframe-agent"
            ),
        )
    })
}

pub(crate) async fn proxy<'a>(
    target: &Target,
    connection: &zbus::Connection,
) -> Result<Agent1Proxy<'a>, Failure> {
    Agent1Proxy::new(connection)
        .await
        .map_err(|e| Failure::new(Exit::Unreachable, format!("{target}: {e}")))
}

/// Shows a snapshot's phases as they happen.
pub trait Progress: Send {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64);
    fn done(&mut self) {}
}

/// No progress (JSON to a pipe, or fleet runs that print one line per machine).
pub struct Silent;
impl Progress for Silent {
    fn phase(&mut self, _: &str, _: bool, _: bool, _: f64) {}
}

/// One line per phase on stderr. Lines during the frozen window are held until the thaw: stderr
/// may be a file on a filesystem being frozen, and a write there would block this client.
#[derive(Default)]
pub struct Lines {
    held: Vec<String>,
    frozen: bool,
}

impl Progress for Lines {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64) {
        let line = if finished {
            format!(
                "{phase}: {} in {elapsed_ms:.1} ms",
                if ok { "done" } else { "FAILED" }
            )
        } else {
            format!("{phase}: started")
        };
        if phase == "freeze" && !finished {
            self.frozen = true;
        }
        self.held.push(line);
        if phase == "thaw" && finished {
            self.frozen = false;
        }
        if !self.frozen {
            let mut err = std::io::stderr().lock();
            for line in self.held.drain(..) {
                let _ = writeln!(err, "{line}");
            }
        }
    }

    fn done(&mut self) {
        let mut err = std::io::stderr().lock();
        for line in self.held.drain(..) {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// A live spinner on a terminal: the phase running now, and the frozen window as it happens.
pub struct Spinner {
    bar: indicatif::ProgressBar,
    frozen_at: Option<std::time::Instant>,
}

impl Spinner {
    pub fn new(what: &str) -> Spinner {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}{msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("{what}: "));
        bar.enable_steady_tick(std::time::Duration::from_millis(80));
        Spinner { bar, frozen_at: None }
    }
}

impl Progress for Spinner {
    fn phase(&mut self, phase: &str, finished: bool, ok: bool, elapsed_ms: f64) {
        match (phase, finished) {
            ("freeze", false) => {
                self.frozen_at = Some(std::time::Instant::now());
                self.bar.set_message("freezing filesystems");
            }
            ("request", false) => self.bar.set_message("FROZEN: requesting the snapshot"),
            ("thaw", true) => {
                if let Some(at) = self.frozen_at.take() {
                    self.bar.println(format!(
                        "  writes were blocked for {:.0} ms",
                        at.elapsed().as_secs_f64() * 1000.0
                    ));
                }
            }
            (_, false) => self.bar.set_message(format!("{phase}…")),
            (_, true) => self.bar.println(format!(
                "  {phase} {} {elapsed_ms:.1} ms",
                if ok { "✓" } else { "✗" }
            )),
        }
    }

    fn done(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// What to ask for.
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest {
    pub name: Option<String>,
    pub wait: bool,
    pub dry_run: bool,
}

/// How a snapshot job ended: its report, or for a dry run the plan.
#[derive(Debug, Clone)]
pub enum Finished {
    Snapshot(Box<Report>),
    Plan(Box<SnapshotPlan>),
}

impl Finished {
    /// 0 when it succeeded; 2 when the report says the machine's set-up is at fault (its
    /// configuration, the token file), as for any configuration error; 1 otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            Finished::Plan(_) => Exit::Success,
            Finished::Snapshot(report) => report_exit(report),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Finished::Snapshot(report) => freezeframe_agent::render::report(report),
            Finished::Plan(plan) => freezeframe_agent::render::plan(plan),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Finished::Snapshot(report) => serde_json::to_value(report),
            Finished::Plan(plan) => serde_json::to_value(plan),
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
                    read(target, &a.report).map(|plan| Finished::Plan(Box::new(plan)))
                } else {
                    read(target, &a.report).map(|r| Finished::Snapshot(Box::new(r)))
                };
            }
        }
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

/// What `freezeframe status` shows: the agent's own status, and the newest restore drill's
/// result among its snapshots (from their tags, listed through the agent).
#[derive(Debug, serde::Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub agent: AgentStatus,
    /// The newest snapshot a restore drill ran on, with its result.
    pub last_drill: Option<SnapshotInfo>,
    /// How many snapshots were listed (none when they could not be).
    pub snapshots: usize,
    /// Why the snapshots could not be listed, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots_error: Option<String>,
}

/// How long `status` waits for the snapshot list (an API call on the agent's side).
const STATUS_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn status(target: &Target) -> Result<StatusView, Failure> {
    let connection = client::connect(target).await?;
    let agent = proxy(target, &connection).await?;
    let status = agent.status().await.map_err(|e| call_failure(target, e))?;
    let status: AgentStatus = read(target, &status)?;
    // The status stands without the list (an API that is down, a token without image:read),
    // and does not wait long for it.
    let listed = match tokio::time::timeout(STATUS_LIST_TIMEOUT, agent.list_snapshots()).await {
        Ok(Ok(list)) => list
            .iter()
            .map(|s| read::<SnapshotInfo>(target, s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|f| f.message),
        Ok(Err(e)) => Err(call_failure(target, e).message),
        Err(_) => Err(format!(
            "the agent did not list them within {}s",
            STATUS_LIST_TIMEOUT.as_secs()
        )),
    };
    let (list, snapshots_error) = match listed {
        Ok(list) => (list, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    Ok(StatusView {
        agent: status,
        last_drill: list
            .iter()
            .filter(|s| s.drill.is_some())
            .max_by(|a, b| a.created_at.cmp(&b.created_at))
            .cloned(),
        snapshots: list.len(),
        snapshots_error,
    })
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

pub async fn prune(target: &Target, keep: u32) -> Result<Vec<Pruned>, Failure> {
    let connection = client::connect(target).await?;
    let pruned = proxy(target, &connection)
        .await?
        .prune(keep)
        .await
        .map_err(|e| call_failure(target, e))?;
    pruned.iter().map(|p| read(target, p)).collect()
}

/// Deletes the target's snapshots of the groups `groups`.
pub async fn delete_groups(target: &Target, groups: &[String]) -> Result<Vec<Pruned>, Failure> {
    let connection = client::connect(target).await?;
    let deleted = proxy(target, &connection)
        .await?
        .delete_groups(groups.to_vec())
        .await
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
    freezeframe_agent::runtime::recover(runtime_dir, None, freezeframe_agent::config::DEFAULT_HOOK_TIMEOUT)
        .await
        .map_err(|e| {
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

/// Status as text.
pub fn status_text(view: &StatusView) -> String {
    let status = &view.agent;
    let mut out = format!(
        "agent {} (provider {}{})\n",
        status.version,
        status.provider,
        status
            .droplet_id
            .map(|id| format!(", Droplet {id}"))
            .unwrap_or_default()
    );
    if status.frozen {
        out.push_str("FROZEN: a run's filesystems are frozen now\n");
    }
    if status.running_job != 0 {
        out.push_str(&format!("running: snapshot job {}\n", status.running_job));
    }
    match &status.last_result {
        None => out.push_str("no snapshot taken since the agent's runtime directory was made\n"),
        Some(last) => {
            out.push_str("last result: ");
            out.push_str(&freezeframe_agent::render::report(last));
        }
    }
    if let Some(history) = status.history.as_ref().filter(|h| !h.runs.is_empty()) {
        out.push_str(&history_text(history, STATUS_RUNS));
    }
    out.push_str(&match (&view.last_drill, &view.snapshots_error) {
        (_, Some(why)) => format!("restore drills: unknown, the snapshots could not be listed: {why}\n"),
        (Some(s), None) => format!(
            "last restore drill: {} of snapshot {} (created {})\n",
            match s.drill {
                Some(DrillResult::Failed) => "FAILED",
                _ => "verified",
            },
            s.name,
            s.created_at
        ),
        (None, None) => format!(
            "no restore drill of its {} snapshots: `freezeframe verify SNAPSHOT` runs one\n",
            view.snapshots
        ),
    });
    out
}

/// How many of the recorded runs `status` lists (`--json` gives every one kept).
const STATUS_RUNS: usize = 10;

/// The counts and the last `shown` runs of the agent's record, newest first.
fn history_text(history: &freezeframe_agent::history::History, shown: usize) -> String {
    use freezeframe_agent::transaction::Status;
    let totals = &history.totals;
    let mut out = format!(
        "runs recorded: {} succeeded, {} failed; the thaw guard ended {} freezes at the deadline and {} \
         for an agent that died\n",
        totals.succeeded, totals.failed, totals.guard_deadline_thaws, totals.guard_agent_died_thaws
    );
    let mut rows = vec![["ENDED", "RESULT", "CONSISTENCY", "FROZEN", "TOTAL", "SNAPSHOT"]
        .map(String::from)
        .to_vec()];
    for run in history.runs.iter().rev().take(shown) {
        let ended = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(run.finished_unix.max(0.0));
        rows.push(vec![
            humantime::format_rfc3339_seconds(ended).to_string(),
            match run.status {
                Status::Succeeded => "succeeded".into(),
                Status::Failed => "FAILED".into(),
            },
            run.consistency
                .map_or_else(|| "-".into(), |c| c.as_str().to_string()),
            format!("{:.0} ms", run.frozen_ms),
            format!("{:.1} s", run.total_ms / 1000.0),
            run.snapshot_name.clone(),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// Rows as columns padded to their widest cell, the first row the header.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

/// A snapshot list as a table with a header; the id column only where ids are not the names.
pub fn snapshots_text(list: &[SnapshotInfo]) -> String {
    if list.is_empty() {
        return "no snapshots\n".into();
    }
    let with_ids = list.iter().any(|s| s.id != s.name);
    let drilled = list.iter().any(|s| s.drill.is_some());
    let recorded = list.iter().any(|s| s.consistency.is_some());
    let mut table = vec![vec!["CREATED".to_string(), "SIZE".into(), "NAME".into()]];
    if with_ids {
        table[0].push("ID".into());
    }
    if recorded {
        table[0].push("CONSISTENCY".into());
    }
    if drilled {
        table[0].push("RESTORE DRILL".into());
    }
    for s in list {
        let size = s
            .size_bytes
            .map(|b| format!("{:.1} GB", b as f64 / 1e9))
            .unwrap_or_else(|| "-".into());
        let mut row = vec![s.created_at.clone(), size, s.name.clone()];
        if with_ids {
            row.push(s.id.clone());
        }
        if recorded {
            row.push(s.consistency.map_or("-", |c| c.as_str()).into());
        }
        if drilled {
            row.push(
                match s.drill {
                    Some(DrillResult::Verified) => "verified",
                    Some(DrillResult::Failed) => "FAILED",
                    None => "-",
                }
                .into(),
            );
        }
        table.push(row);
    }
    self::table(&table)
}

/// What prune deleted, said as such.
pub fn pruned_text(pruned: &[Pruned]) -> String {
    if pruned.is_empty() {
        return "nothing to delete: no more snapshots than --keep\n".into();
    }
    let mut out = format!(
        "deleted {} snapshot{}:\n",
        pruned.len(),
        if pruned.len() == 1 { "" } else { "s" }
    );
    for p in pruned {
        if p.id == p.name {
            out.push_str(&format!("  {}\n", p.name));
        } else {
            out.push_str(&format!("  {} (id {})\n", p.name, p.id));
        }
    }
    out
}
