//! Several machines from one call (`-H A -H B …`): each runs concurrently, at most `--parallel`
//! at once; one line per machine as it finishes, then a summary. One failure does not stop the
//! others; the exit code is the worst of theirs (0, 75, 1, 2, 3 from best to worst).

use crate::agent::Exit;
use crate::args::{Cli, Command};
use crate::client::Target;
use crate::pacing::{Pacer, Start};
use crate::progress::{self, Board, Progress, State};
use serde_json::{json, Value};
use std::sync::Arc;

/// One machine's outcome: its exit, its result (report, status, …), and a line for people.
struct Outcome {
    exit: Exit,
    result: Option<Value>,
    line: String,
    /// What went wrong when there is no result, and at which step.
    error: Option<(String, Option<&'static str>)>,
}

async fn one(command: &Command, target: &Target, progress: &mut dyn Progress) -> Outcome {
    match crate::cmd::one(command, target, progress).await {
        Ok(done) => Outcome {
            exit: done.exit,
            line: done.line,
            result: Some(done.value),
            error: None,
        },
        Err(f) => Outcome {
            exit: f.exit,
            line: format!("FAILED: {}", f.message),
            result: None,
            error: Some((f.message, f.step)),
        },
    }
}

/// A machine whose run pacing did not start: the hour's budget is spent.
fn not_started(until_unix: u64) -> Outcome {
    let message = crate::pacing::hour_spent(until_unix);
    Outcome {
        exit: Exit::Failed,
        result: None,
        line: format!("NOT STARTED: {message}"),
        error: Some((message, Some("pacing"))),
    }
}

/// Runs the command on every target; prints as each finishes; returns the combined exit.
/// Snapshot runs are paced to the API budget (`--api-rate`), and a run longer than a few
/// seconds shows its progress on stderr.
pub async fn run(cli: &Cli, targets: &[Target]) -> Exit {
    let limit = Arc::new(tokio::sync::Semaphore::new(cli.parallel as usize));
    let pacer = Arc::new(Pacer::new(cli.api_rate));
    let board = Board::new(targets);
    let paced = matches!(cli.command, Command::Snapshot { dry_run: false, .. });
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for (index, target) in targets.iter().enumerate() {
        let (limit, done, target) = (limit.clone(), done.clone(), target.clone());
        let (pacer, board) = (pacer.clone(), board.clone());
        let command = cli.command.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            if paced {
                if let Start::HourSpent { until_unix } = pacer.start().await {
                    board.set(index, State::Done(false));
                    let _ = done.send((target, not_started(until_unix)));
                    return;
                }
            }
            board.set(index, State::Running(std::time::Instant::now()));
            let mut progress = board.member(index);
            let outcome = one(&command, &target, &mut progress).await;
            if paced {
                let report = outcome.result.as_ref();
                pacer.finished(
                    report.and_then(|r| r["provider_calls"].as_u64()).unwrap_or(0),
                    report.and_then(|r| serde_json::from_value(r["provider_budget"].clone()).ok()),
                );
            }
            board.set(index, State::Done(outcome.exit == Exit::Success));
            let _ = done.send((target, outcome));
        });
    }
    drop(done);
    let shown = tokio::spawn(progress::show(board.clone(), pacer.clone()));
    let (mut succeeded, mut failed, mut unreachable) = (0usize, 0usize, 0usize);
    let mut worst = Exit::Success;
    while let Some((target, outcome)) = finished.recv().await {
        worst = worst.max(outcome.exit);
        match outcome.exit {
            Exit::Success => succeeded += 1,
            Exit::Unreachable => unreachable += 1,
            _ => failed += 1,
        }
        if cli.json {
            let line = json!({
                "host": target.to_string(),
                "exit": outcome.exit,
                "result": outcome.result,
                "error": outcome.error.as_ref().map(|(message, _)| message),
                "step": outcome.error.as_ref().and_then(|(_, step)| *step),
            });
            crate::outln!("{line}");
        } else {
            crate::outln!("{target}: {}", outcome.line);
        }
    }
    shown.abort();
    if paced && pacer.summary().0 > 0 {
        eprintln!("freezeframe: {}", progress::pacing_line(&pacer));
    }
    if !cli.json {
        crate::outln!(
            "{succeeded} of {} succeeded{}{}",
            targets.len(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            if unreachable > 0 {
                format!(", {unreachable} unreachable")
            } else {
                String::new()
            },
        );
    }
    // The worst of theirs, by the table's order: a busy machine (75) ranks below a failure.
    worst
}
