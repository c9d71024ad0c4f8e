//! `freezeframe snapshot` against one agent: a live snapshot (or its dry run), its phases shown
//! as they happen. `--offline` is [`super::offline`], `--group` [`super::group`].

use crate::agent::{self, Failure, Finished, SnapshotRequest};
use crate::client::Target;
use crate::progress::Progress;
use freezeframe_contract::{Report, Status};

use super::Done;

/// Takes a snapshot through the agent at `target`.
pub(crate) async fn run(
    target: &Target,
    request: &SnapshotRequest,
    progress: &mut dyn Progress,
) -> Result<Done, Failure> {
    let finished = agent::snapshot(target, request, progress).await?;
    let line = match &finished {
        Finished::Snapshot(report) => line(report),
        Finished::DryRun(dry_run) => match &dry_run.preflight.error {
            None => "dry run: preflight passed".into(),
            Some(e) => format!("dry run: a snapshot now would FAIL: {e}"),
        },
    };
    Ok(Done {
        exit: finished.exit(),
        value: finished.to_json(),
        text: finished.text(),
        line,
    })
}

/// One line about a machine's snapshot.
pub(crate) fn line(report: &Report) -> String {
    let verdict = if report.status == Status::Succeeded {
        "succeeded"
    } else {
        "FAILED"
    };
    let mut line = format!("snapshot {} {verdict}", report.snapshot_name);
    if let Some(c) = report.consistency {
        line.push_str(&format!(" ({}-consistent)", c.as_str()));
    }
    if report.frozen_ms > 0.0 {
        line.push_str(&format!(", writes blocked {:.0} ms", report.frozen_ms));
    }
    if let Some(e) = &report.error {
        line.push_str(&format!(": {e}"));
    }
    line
}
