//! Several machines from one call (`-H A -H B …`): each runs concurrently, at most `--parallel`
//! at once; one line per machine as it finishes, then a summary. One failure does not stop the
//! others; the exit code says whether all succeeded.

use crate::args::{Cli, Command};
use crate::client::{Host, Target};
use crate::commands::{self, Exit, Failure, SnapshotRequest};
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

async fn one(command: &Command, target: &Target) -> Outcome {
    let result = match command {
        Command::Snapshot { name, wait, dry_run } => {
            let request = SnapshotRequest {
                name: name.clone(),
                wait: *wait,
                dry_run: *dry_run,
            };
            commands::snapshot(target, &request, &mut commands::Silent)
                .await
                .map(|(ok, report)| (commands::snapshot_exit(ok, &report), report))
        }
        Command::Plan => commands::plan(target).await.map(|v| (Exit::Success, v)),
        Command::Status => commands::status(target).await.map(|v| (Exit::Success, v)),
        Command::List => commands::list(target).await.map(|v| (Exit::Success, v)),
        Command::Prune { keep } => commands::prune(target, *keep).await.map(|v| (Exit::Success, v)),
        Command::Thaw { .. } => commands::thaw(target).await.map(|recovered| {
            let exit = if recovered.failed() {
                Exit::Failed
            } else {
                Exit::Success
            };
            (exit, serde_json::to_value(&recovered).unwrap_or_default())
        }),
        _ => Err(Failure::new(Exit::Usage, "this command takes one machine")),
    };
    match result {
        Ok((exit, value)) => Outcome {
            exit,
            line: summary(command, &value),
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

/// One line about a machine's result.
fn summary(command: &Command, value: &Value) -> String {
    match command {
        Command::Snapshot { dry_run: false, .. } => {
            let verdict = if value["status"] == "succeeded" {
                "succeeded"
            } else {
                "FAILED"
            };
            let mut line = format!(
                "snapshot {} {verdict}",
                value["snapshot_name"].as_str().unwrap_or("?")
            );
            if let Some(c) = value["consistency"].as_str() {
                line.push_str(&format!(" ({c}-consistent)"));
            }
            if let Some(ms) = value["frozen_ms"].as_f64().filter(|ms| *ms > 0.0) {
                line.push_str(&format!(", writes blocked {ms:.0} ms"));
            }
            if let Some(e) = value["error"].as_str() {
                line.push_str(&format!(": {e}"));
            }
            line
        }
        Command::Status => format!(
            "agent {}{}",
            value["version"].as_str().unwrap_or("?"),
            if value["frozen"] == true {
                ", FROZEN now"
            } else {
                ""
            }
        ),
        Command::Thaw { .. } => {
            let thawed = value["filesystems"].as_array().map(Vec::len).unwrap_or(0);
            let resumed = value["resumes"].as_array().map(Vec::len).unwrap_or(0);
            if thawed + resumed == 0 {
                "nothing to thaw".into()
            } else {
                format!("{thawed} filesystems thawed or checked, {resumed} owed resumes run")
            }
        }
        Command::List | Command::Prune { .. } => {
            format!("{} snapshots", value.as_array().map(Vec::len).unwrap_or(0))
        }
        _ => "ok".into(),
    }
}

/// The public IPv4 addresses of the Droplets tagged `tag`, from the API with the user's token
/// (`DIGITALOCEAN_TOKEN`).
pub async fn tagged(api_url: &str, tag: &str) -> Result<Vec<Host>, Failure> {
    use freezeframe_agent::provider::digitalocean::client::{http_client, Client};
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let token = std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| usage("--tag asks the DigitalOcean API which Droplets have the tag: set DIGITALOCEAN_TOKEN to a token with droplet:read".into()))?;
    let http = http_client().map_err(|e| usage(format!("cannot set up HTTPS: {e}")))?;
    let client = Client::new(
        http,
        api_url,
        freezeframe_agent::secret::Secret::new(token.trim()),
        &["droplet:read"],
        std::time::Duration::from_secs(15),
    );
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
pub async fn run(cli: &Cli, targets: &[Target]) -> Exit {
    let limit = Arc::new(tokio::sync::Semaphore::new(cli.parallel as usize));
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    for target in targets {
        let (limit, done, target) = (limit.clone(), done.clone(), target.clone());
        let command = cli.command.clone();
        tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let outcome = one(&command, &target).await;
            let _ = done.send((target, outcome));
        });
    }
    drop(done);
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
