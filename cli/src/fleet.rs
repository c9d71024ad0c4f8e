//! Several machines from one call (`-H A -H B …`): each runs concurrently, at most `--parallel`
//! at once; one line per machine as it finishes, then a summary. One failure does not stop the
//! others; the exit code says whether all succeeded.

use crate::args::{Cli, Command};
use crate::client::{Host, Target};
use crate::commands::{self, Exit, Failure, Finished, SnapshotRequest};
use crate::pacing::{Pacer, Start};
use crate::progress::{self, Board, State};
use freezeframe_contract::DrillResult;
use freezeframe_contract::Status;
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

async fn one(command: &Command, target: &Target, progress: &mut dyn commands::Progress) -> Outcome {
    let result: Result<(Exit, Value, String), Failure> = match command {
        Command::Snapshot {
            name, wait, dry_run, ..
        } => {
            let request = SnapshotRequest {
                name: name.clone(),
                wait: *wait,
                dry_run: *dry_run,
            };
            commands::snapshot(target, &request, progress)
                .await
                .map(|finished| {
                    let line = match &finished {
                        Finished::Snapshot(report) => snapshot_line(report),
                        Finished::Plan(_) => "ok".into(),
                    };
                    (finished.exit(), finished.to_json(), line)
                })
        }
        Command::Plan => commands::plan(target)
            .await
            .map(|plan| (Exit::Success, json(&plan), "ok".into())),
        Command::Status => commands::status(target).await.map(|status| {
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
            (Exit::Success, json(&status), line)
        }),
        Command::List { group } => commands::list(target).await.map(|mut list| {
            list.retain(|s| group.is_none() || s.group == *group);
            (Exit::Success, json(&list), format!("{} snapshots", list.len()))
        }),
        Command::Prune { keep, .. } => commands::prune(target, keep.unwrap_or(1)).await.map(|pruned| {
            (
                Exit::Success,
                json(&pruned),
                format!("{} snapshots deleted", pruned.len()),
            )
        }),
        Command::Thaw { .. } => commands::thaw(target).await.map(|recovered| {
            let exit = if recovered.failed() {
                Exit::Failed
            } else {
                Exit::Success
            };
            let (thawed, resumed) = (recovered.filesystems.len(), recovered.resumes.len());
            let line = if thawed + resumed == 0 {
                "nothing to thaw".into()
            } else {
                format!("{thawed} filesystems thawed or checked, {resumed} owed resumes run")
            };
            (exit, json(&recovered), line)
        }),
        _ => Err(Failure::new(Exit::Usage, "this command takes one machine")),
    };
    match result {
        Ok((exit, value, line)) => Outcome {
            exit,
            line,
            result: Some(value),
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

fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// One line about a machine's snapshot.
pub(crate) fn snapshot_line(report: &freezeframe_contract::Report) -> String {
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

/// A client of the DigitalOcean API at `api_url` with the user's token (`DIGITALOCEAN_TOKEN`),
/// which needs `scopes`; `why` says what the token is for when it is missing.
pub fn api_client(
    api_url: &str,
    scopes: &[&str],
    why: &str,
) -> Result<freezeframe_agent::provider::digitalocean::client::Client, Failure> {
    use freezeframe_agent::provider::digitalocean::client::{http_client, Client};
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let token = std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            usage(format!(
                "{why}: set DIGITALOCEAN_TOKEN to a token with {}",
                scopes.join(", ")
            ))
        })?;
    let http = http_client(api_url).map_err(|e| usage(format!("cannot set up HTTPS: {e}")))?;
    Ok(Client::new(
        http,
        api_url,
        freezeframe_agent::secret::Secret::new(token.trim()),
        scopes,
        std::time::Duration::from_secs(15),
    ))
}

/// The public IPv4 addresses of the Droplets tagged `tag`, from the API with the user's token
/// (`DIGITALOCEAN_TOKEN`).
pub async fn tagged(api_url: &str, tag: &str) -> Result<Vec<Host>, Failure> {
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let client = api_client(
        api_url,
        &["droplet:read"],
        "--tag asks the DigitalOcean API which Droplets have the tag",
    )?;
    let droplets = client.droplets_with_tag(tag).await.map_err(|e| {
        Failure::new(
            Exit::Unreachable,
            format!("cannot list the Droplets tagged `{tag}`: {e}"),
        )
    })?;
    let mut hosts = Vec::new();
    for d in droplets {
        match d.public_ipv4() {
            Some(ip) => hosts.push(
                ip.parse::<Host>()
                    .map_err(|e| usage(format!("Droplet {} ({}): {e}", d.id, d.name)))?,
            ),
            None => eprintln!(
                "freezeframe: Droplet {} ({}) has no public IPv4 address: skipped",
                d.id, d.name
            ),
        }
    }
    Ok(hosts)
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
    while let Some((target, outcome)) = finished.recv().await {
        match outcome.exit {
            Exit::Success => succeeded += 1,
            Exit::Unreachable => unreachable += 1,
            _ => failed += 1,
        }
        if cli.json {
            let line = json!({
                "host": target.to_string(),
                "exit": outcome.exit as u8,
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
    match (failed, unreachable) {
        (0, 0) => Exit::Success,
        (0, _) => Exit::Unreachable,
        _ => Exit::Failed,
    }
}
