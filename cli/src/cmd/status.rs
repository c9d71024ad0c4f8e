//! `freezeframe status`: the agent's status, its recorded runs, and the newest restore drill's
//! result among its snapshots.

use crate::agent::{call_failure, proxy, read, Exit, Failure};
use crate::client::{self, Target};
use crate::output::{json, table};
use freezeframe_contract::AgentStatus;
use freezeframe_contract::{DrillResult, SnapshotInfo};

use super::Done;

/// The status of the agent at `target`.
pub(crate) async fn run(target: &Target) -> Result<Done, Failure> {
    let status = status(target).await?;
    let line = format!(
        "agent {}{}{}",
        status.agent.version,
        if status.agent.frozen { ", FROZEN now" } else { "" },
        match status.last_drill.as_ref().and_then(|s| s.drill) {
            Some(DrillResult::Verified) => ", last restore drill verified",
            Some(DrillResult::Failed) => ", last restore drill FAILED",
            None => "",
        }
    );
    Ok(Done {
        exit: Exit::Success,
        value: json(&status),
        text: status_text(&status),
        line,
    })
}

/// What `freezeframe status` shows: the agent's own status, and the newest restore drill's
/// result among its snapshots (from their tags, listed through the agent).
#[derive(Debug, serde::Serialize)]
pub(crate) struct StatusView {
    #[serde(flatten)]
    pub agent: AgentStatus,
    /// The newest snapshot a restore drill ran on, with its result.
    pub last_drill: Option<SnapshotInfo>,
    /// How many snapshots were listed (none when they could not be).
    pub snapshots: usize,
    /// Why the snapshots could not be listed, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots_error: Option<String>,
    /// The snapshots listed, for each run's verification (the list shows them).
    #[serde(skip)]
    pub listed: Vec<SnapshotInfo>,
}

/// How long `status` waits for the snapshot list (an API call on the agent's side).
const STATUS_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn status(target: &Target) -> Result<StatusView, Failure> {
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
        listed: list,
    })
}

/// Status as text.
fn status_text(view: &StatusView) -> String {
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
            out.push_str(&freezeframe_contract::render::report(last));
        }
    }
    if let Some(history) = status.history.as_ref().filter(|h| !h.runs.is_empty()) {
        let listed = view.snapshots_error.is_none().then_some(view.listed.as_slice());
        out.push_str(&history_text(history, STATUS_RUNS, listed));
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

/// What restore drills found for `run`'s snapshot, from its tags in `listed` (none: the
/// snapshots could not be listed).
fn verification(
    run: &freezeframe_contract::history::RunRecord,
    listed: Option<&[SnapshotInfo]>,
) -> &'static str {
    let Some(listed) = listed else {
        return "?";
    };
    let snapshot = listed.iter().find(|s| match &run.snapshot_id {
        Some(id) => &s.id == id,
        None => !run.snapshot_name.is_empty() && s.name == run.snapshot_name,
    });
    match snapshot.and_then(|s| s.drill) {
        Some(DrillResult::Verified) => "verified",
        Some(DrillResult::Failed) => "FAILED",
        None => "-",
    }
}

/// The counts and the last `shown` runs of the agent's record, newest first, each with what
/// restore drills found for its snapshot (VERIFICATION: `-` when none ran, `?` when the
/// snapshots could not be listed).
fn history_text(
    history: &freezeframe_contract::history::History,
    shown: usize,
    listed: Option<&[SnapshotInfo]>,
) -> String {
    use freezeframe_contract::Status;
    let totals = &history.totals;
    let mut out = format!(
        "runs recorded: {} succeeded, {} failed; the thaw guard ended {} freezes at the deadline and {} \
         for an agent that died\n",
        totals.succeeded, totals.failed, totals.guard_deadline_thaws, totals.guard_agent_died_thaws
    );
    let mut rows = vec![[
        "ENDED",
        "RESULT",
        "CONSISTENCY",
        "FROZEN",
        "TOTAL",
        "VERIFICATION",
        "SNAPSHOT",
    ]
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
            verification(run, listed).to_string(),
            // A failed run's name is only the one it would have had.
            if run.made_snapshot() {
                run.snapshot_name.clone()
            } else {
                "- (none taken)".into()
            },
        ]);
    }
    out.push_str(&table(&rows));
    out
}
