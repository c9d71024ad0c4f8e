//! `freezeframe snapshot --offline`: DigitalOcean's documented way (power off, snapshot, power
//! on), driven through the API with the care of the live way. A clean `shutdown` first (the
//! guest powers off through ACPI, every service stopping as `shutdown -h now` would), a hard
//! `power_off` only when the user allowed it and the guest did not stop in time; the snapshot
//! (and one of each attached volume) while off; `power_on` once the snapshot has released the
//! Droplet's lock; and the Droplet powered on again on every path after the shutdown.
//!
//! What the platform guarantees: a powered-off Droplet's disk does not change, and a Droplet is
//! locked while its snapshot runs. What freezeframe does: it records the pending power-on before
//! the shutdown (a file under the user's state directory and the tag
//! `freezeframe-offline-pending` on the Droplet), powers on from every failure and from
//! SIGINT/SIGTERM, and `freezeframe recover` powers on what a run killed outright left off.

use crate::agent::{Exit, Failure};
use crate::api::{self, Access};
use crate::args::{Cli, Command};
use crate::client::Target;
use crate::ssh::Host;
use freezeframe_contract::AgentStatus;
use freezeframe_digitalocean::labels;
use freezeframe_digitalocean::limits::VolumeLimit;
use freezeframe_digitalocean::{ApiError, Client};
use freezeframe_digitalocean::{Droplet, ListedDroplet, PowerAction};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
// tokio's clock: the tests run on a paused one that jumps over the pauses.
use tokio::time::Instant;

mod droplets;
mod error;
mod pending;
mod plan;
mod ports;
mod power;

use droplets::named;
pub(crate) use error::OfflineError;
pub(crate) use pending::{Pending, PendingPowerOn};
use plan::{plan, plan_text};
pub(crate) use ports::Api;
use power::Run;

/// The tag on a Droplet that an offline run powered off and has not powered on yet.
pub const PENDING_TAG: &str = "freezeframe-offline-pending";

/// How long an agent has to answer, before the shutdown and each time after the boot.
const AGENT_ANSWERS: Duration = Duration::from_secs(15);
/// The first pause between two reads of the Droplet or an action while waiting; it doubles up to
/// a bound ([`Backoff`]). Every pause past the moment the state changed is downtime (the Droplet
/// is off all along), so the bounds are short: the benchmark's offline runs with pauses of up to
/// 4 s and 15 s were down about 10 s longer than the platform needed.
const POLL: Duration = Duration::from_secs(1);
/// The longest pause while the guest shuts down or boots.
const POLL_POWER: Duration = Duration::from_secs(2);
/// The longest pause while a snapshot runs: 12 reads a minute, so a 25-minute snapshot costs
/// 300 of the token's 5,000 calls an hour.
const POLL_SNAPSHOT: Duration = Duration::from_secs(5);

/// Pauses between polls, from [`POLL`], doubling up to `most`.
struct Backoff {
    next: Duration,
    most: Duration,
}

impl Backoff {
    fn up_to(most: Duration) -> Backoff {
        Backoff { next: POLL, most }
    }

    /// The next pause, doubling the one after it.
    fn take(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.most);
        now
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.take()).await;
    }
}
/// The longest pause between two tries to power a Droplet on after failures: a Droplet left off
/// is tried for all of `--power-on-deadline`, at no more than 120 calls an hour.
const POLL_RETRY: Duration = Duration::from_secs(30);
/// How long `recover` keeps trying to power a Droplet on (`--power-on-deadline`'s default).
const RECOVER_PATIENCE: Duration = Duration::from_secs(3600);
/// The longest wait for a snapshot to release the Droplet before powering on.
const SNAPSHOT_BOUND: Duration = Duration::from_secs(6 * 3600);

/// What an offline snapshot asks.
#[derive(Debug, Clone)]
pub struct OfflineRequest {
    /// The snapshot's name [default: `<droplet name>-<utc>-offline`].
    pub name: Option<String>,
    /// How long the guest has to power off after the shutdown request.
    pub shutdown_timeout: Duration,
    /// Past that, cut the power (`power_off`) instead of giving up.
    pub force_power_off: bool,
    /// How long the Droplet has to be active again after `power_on`, before it is asked again.
    pub boot_timeout: Duration,
    /// How long failures to power the Droplet on are retried before it is left to `recover`.
    pub power_on_deadline: Duration,
    /// Say what would be done, do nothing.
    pub dry_run: bool,
}

/// Why an offline run of `droplet` must not start, if it must not: it is not active, it has a
/// pending event, or the platform would refuse a snapshot of one of its volumes now (checked
/// before the shutdown, not discovered with the Droplet off).
async fn refusal(client: &impl Api, droplet: &Droplet) -> Result<Option<String>, OfflineError> {
    let id = droplet.id;
    if droplet.status != "active" {
        return Ok(Some(format!(
            "it is {}, not active: an offline snapshot powers a running Droplet off and on again",
            droplet.status
        )));
    }
    let actions = client
        .droplet_actions(id)
        .await
        .map_err(|e| OfflineError::api(format!("cannot list the actions of Droplet {id}"), e))?;
    if droplet.locked || actions.iter().any(|a| a.status == "in-progress") {
        return Ok(Some(
            "it has a pending event; wait for it to finish and try again".into(),
        ));
    }
    for volume_id in &droplet.volume_ids {
        let volume = client.volume(volume_id).await.map_err(|e| {
            OfflineError::api(
                format!("cannot read volume {volume_id} attached to Droplet {id}"),
                e,
            )
        })?;
        if let Err(limit) = client.check_volume(&volume.id, &volume.name).await {
            return match limit {
                VolumeLimit::Api { volume, source } => Err(OfflineError::api(
                    format!("cannot list the snapshots of volume {volume}"),
                    *source,
                )),
                _ => Ok(Some(limit.to_string())),
            };
        }
    }
    Ok(None)
}

/// One step of the run and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ms: f64,
}

/// What an offline run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfflineReport {
    pub droplet_id: u64,
    pub droplet_name: String,
    pub succeeded: bool,
    /// `offline` once the snapshot registered while the Droplet was off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<&'static str>,
    pub snapshot_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u64>,
    /// What its agent would have quiesced for a live snapshot, which the shutdown stopped,
    /// when an agent answered before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// The volume snapshots taken while off, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshots: Vec<String>,
    /// The guest did not stop in time and the power was cut (`--force-power-off`).
    pub hard_power_off: bool,
    /// The Droplet was shut down by this run.
    pub shut_down: bool,
    /// It runs again (or never stopped).
    pub running: bool,
    /// From the shutdown request to the Droplet active again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    /// From the shutdown request to its agent answering again, where one answered before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_downtime_ms: Option<f64>,
    pub steps: Vec<Step>,
    /// What did not fail the run but matters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit this Droplet's run ends with (the command's is the worst of its Droplets').
    pub exit: Exit,
}

impl OfflineReport {
    /// Records how the run ended: its error, if any, and the exit that follows from it.
    fn ended(&mut self, error: Option<OfflineError>) {
        self.succeeded = error.is_none();
        self.exit = error.as_ref().map_or(Exit::Success, OfflineError::exit);
        self.error = error.map(|e| e.to_string());
    }
}

/// SIGINT or SIGTERM seen: stop waiting for the shutdown or the snapshot and power on.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A stop set by SIGINT or SIGTERM from now on.
    pub fn on_signals() -> Stop {
        let stop = Stop::default();
        let flag = stop.0.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                flag.store(true, Ordering::SeqCst);
                eprintln!(
                    "freezeframe: interrupted: the Droplet is powered on again as soon as the \
                     platform lets it (after its snapshot, if one runs); killed outright, it is \
                     left to `freezeframe recover`"
                );
            }
        });
        stop
    }

    fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs the offline snapshot of Droplet `id`; `agent`, if given, is how its agent is reached
/// (waited for after the boot when it answered before the shutdown).
pub async fn snapshot(
    client: &impl Api,
    id: u64,
    agent: Option<&Target>,
    request: &OfflineRequest,
    pending: &Pending,
    stop: &Stop,
) -> OfflineReport {
    let (agent, databases) = match agent {
        Some(target) => match agent_plan(target).await {
            Ok(plan) => (Some(target), Some(plan.quiesce)),
            Err(why) => (not_waited_for(target, &why), None),
        },
        None => (None, None),
    };
    let mut run = Run {
        client,
        id,
        pending,
        stop,
        report: OfflineReport {
            droplet_id: id,
            databases,
            running: true,
            ..OfflineReport::default()
        },
        down_at: None,
    };
    let mut error = run.go(request).await.err();
    if run.report.shut_down {
        let mut after = run
            .power_on(request.boot_timeout, request.power_on_deadline)
            .await;
        if let (Ok(()), Some(target)) = (&after, agent) {
            after = run.agent_back(target, request.boot_timeout).await;
        }
        if let Err(then) = after {
            error = Some(match error {
                Some(first) => OfflineError::Both {
                    first: Box::new(first),
                    then: Box::new(then),
                },
                None => then,
            });
        }
    }
    // Recorded once the Droplet runs again: the tags cost no downtime.
    if error.is_none() && run.report.consistency.is_some() {
        if let Err(why) = run.label().await {
            run.report.warnings.push(why.to_string());
        }
    }
    run.report.ended(error);
    run.report
}

/// No agent to wait for after the boot, and why.
fn not_waited_for<'a>(target: &Target, why: &Failure) -> Option<&'a Target> {
    let why = &why.message;
    eprintln!(
        "freezeframe: {target}: no agent answers ({why}): the run does not wait for one after the boot"
    );
    None
}

/// What the agent at `target` would do for a live snapshot (its plan asks nothing of the API),
/// or why it did not say within [`AGENT_ANSWERS`].
async fn agent_plan(target: &Target) -> Result<freezeframe_contract::SnapshotPlan, Failure> {
    within_answer_time(crate::agent::plan(target)).await
}

/// The status of the agent at `target` (which asks nothing of the API), or why it did not
/// give it within [`AGENT_ANSWERS`].
async fn agent_status(target: &Target) -> Result<AgentStatus, Failure> {
    within_answer_time(crate::agent::status(target)).await
}

/// `asked`, bounded by [`AGENT_ANSWERS`] (past it, the agent is out of reach).
async fn within_answer_time<T>(
    asked: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(AGENT_ANSWERS, asked).await {
        Ok(answer) => answer,
        Err(_) => Err(Failure::new(
            Exit::Unreachable,
            format!("no answer within {} s", AGENT_ANSWERS.as_secs()),
        )),
    }
}

/// Powers on every Droplet a killed offline run left off: those recorded under the user's
/// state directory and those tagged [`PENDING_TAG`]. A record that another API or account made
/// is not tried here: said, and kept for a token of its own. A token the API refuses stops it
/// before anything (exit 2, as a missing token).
pub async fn recover(client: &impl Api, pending: &Pending) -> Result<Vec<OfflineReport>, Failure> {
    let mut ids = Vec::new();
    match client.droplets_with_tag(PENDING_TAG).await {
        Ok(tagged) => ids.extend(tagged.iter().map(|d| d.id)),
        Err(e @ ApiError::Unauthorized { .. }) => {
            return Err(Failure::new(
                Exit::Usage,
                format!("cannot list the Droplets tagged {PENDING_TAG}: {e}"),
            ))
        }
        Err(e) => eprintln!("freezeframe: warning: cannot list the Droplets tagged {PENDING_TAG}: {e}"),
    }
    let (api_url, account) = (client.api_url(), client.account().await);
    if let Err(e) = &account {
        eprintln!(
            "freezeframe: warning: cannot read which account the token belongs to ({e}): records \
             are tried whatever account they came from"
        );
    }
    let mut reports = Vec::new();
    for record in pending.all() {
        let id = record.droplet_id;
        // Tagged in this account: its own, whoever recorded it.
        if ids.contains(&id) {
            continue;
        }
        match record.foreign(&api_url, account.as_ref().ok().map(String::as_str)) {
            None => ids.push(id),
            Some(why) => reports.push(not_tried(pending, &record, &why)),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        reports.push(recover_one(client, pending, id).await);
    }
    Ok(reports)
}

/// The report of a record from another API or account: not tried, kept.
fn not_tried(pending: &Pending, record: &PendingPowerOn, why: &str) -> OfflineReport {
    let id = record.droplet_id;
    let message = format!(
        "Droplet {id} ({}) is not tried with this API and token: {why}; run `freezeframe recover` \
         with a token of that account (and --api-url of that API){}",
        record.droplet_name,
        pending.where_recorded(id)
    );
    eprintln!("freezeframe: error: {message}");
    OfflineReport {
        droplet_id: id,
        droplet_name: record.droplet_name.clone(),
        snapshot_name: record.snapshot_name.clone().unwrap_or_default(),
        shut_down: true,
        running: false,
        error: Some(message),
        exit: Exit::Failed,
        ..OfflineReport::default()
    }
}

/// Whether an earlier run left Droplet `id` waiting for its power-on: recorded here, or
/// tagged (by a run on another machine, or one whose record is gone).
async fn left_off(client: &impl Api, pending: &Pending, id: u64) -> bool {
    pending.all().iter().any(|p| p.droplet_id == id)
        || client
            .droplet(id)
            .await
            .is_ok_and(|d| d.tags.iter().any(|t| t == PENDING_TAG))
}

/// Powers Droplet `id` on (once nothing holds it) and clears its record; a Droplet that no
/// longer exists has its record cleared, said.
async fn recover_one(client: &impl Api, pending: &Pending, id: u64) -> OfflineReport {
    let stop = Stop::default();
    let record = pending.get(id);
    let mut run = Run {
        client,
        id,
        pending,
        stop: &stop,
        report: OfflineReport {
            droplet_id: id,
            droplet_name: record
                .as_ref()
                .map(|r| r.droplet_name.clone())
                .unwrap_or_default(),
            snapshot_name: record
                .as_ref()
                .and_then(|r| r.snapshot_name.clone())
                .unwrap_or_default(),
            ..OfflineReport::default()
        },
        down_at: None,
    };
    match client.droplet(id).await {
        Ok(droplet) => {
            run.report.droplet_name = droplet.name;
            // Left off by the run (a run killed before its shutdown left it running).
            run.report.shut_down = droplet.status != "active";
        }
        Err(ApiError::Status { status: 404, .. }) => {
            let file = pending.file(id);
            pending.clear(id);
            let said = format!(
                "Droplet {id} no longer exists (the API answers 404): there is nothing to power \
                 on, and its record {} is cleared",
                file.display()
            );
            eprintln!("freezeframe: {said}");
            run.report.warnings.push(said);
            run.report.succeeded = true;
            return run.report;
        }
        // The power-on reads it again, and says why it cannot.
        Err(_) => {}
    }
    let error = run
        .power_on(Duration::from_secs(300), RECOVER_PATIENCE)
        .await
        .err();
    run.report.ended(error);
    run.report
}

/// The report for people.
pub fn text(r: &OfflineReport) -> String {
    let mut out = format!("Droplet {} ({}): ", r.droplet_id, r.droplet_name);
    match &r.error {
        None => out.push_str(&format!("snapshot {} succeeded (offline)", r.snapshot_name)),
        Some(e) => out.push_str(&format!("FAILED: {e}")),
    }
    if let Some(down) = r.downtime_ms {
        out.push_str(&format!(", down {:.1} s", down / 1000.0));
    }
    if r.hard_power_off {
        out.push_str(", the power was CUT (the guest did not shut down in time)");
    }
    if !r.running {
        out.push_str("; it is NOT running: `freezeframe recover` powers it on");
    }
    out.push('\n');
    out
}

/// `snapshot --offline`: each Droplet named by `--droplet` or carrying `--tag`, one after the
/// other; one JSON document per Droplet with `--json`, printed as each ends. Exit 0 when every
/// one succeeded, else the worst of theirs.
pub(crate) async fn run(cli: &Cli) -> Result<crate::cmd::Ended, Failure> {
    let Command::Snapshot {
        droplets,
        name,
        shutdown_timeout,
        force_power_off,
        boot_timeout,
        power_on_deadline,
        dry_run,
        ..
    } = &cli.command
    else {
        unreachable!("called for snapshot --offline only")
    };
    let request = &OfflineRequest {
        name: name.clone(),
        shutdown_timeout: *shutdown_timeout,
        force_power_off: *force_power_off,
        boot_timeout: *boot_timeout,
        power_on_deadline: *power_on_deadline,
        dry_run: *dry_run,
    };
    let (client, pending) = setup(&cli.api_url)?;
    let ids = named(cli, &client, droplets).await?;
    if ids.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            "--offline snapshots the Droplets named by -H HOST, --droplet ID or --tag TAG: none was named",
        ));
    }
    let exit = if request.dry_run {
        dry_run_all(cli.json, &client, ids, request, &pending).await
    } else {
        run_all(cli.json, &client, ids, request, &pending).await
    };
    Ok(crate::cmd::Ended::Streamed(exit))
}

/// The dry run of each Droplet: its plan, or why it cannot be made, one document each.
async fn dry_run_all(
    json: bool,
    client: &Client,
    ids: Vec<(u64, Option<Target>)>,
    request: &OfflineRequest,
    pending: &Pending,
) -> Exit {
    let mut exit = Exit::Success;
    for (id, agent) in ids {
        match plan(client, id, agent.as_ref(), request, pending).await {
            Ok(p) if json => crate::outln!("{}", serde_json::to_string(&p).unwrap_or_default()),
            Ok(p) => freezeframe_agent::stdout::write(plan_text(&p).as_bytes()),
            Err(why) => {
                exit = exit.max(why.exit());
                let failure = Failure::new(why.exit(), why.to_string());
                if json {
                    let document = serde_json::json!({
                        "droplet_id": id, "error": failure.message, "exit": failure.exit,
                    });
                    crate::outln!("{document}");
                }
                eprintln!("freezeframe: error: {}", failure.message);
            }
        }
    }
    exit
}

/// The run of each Droplet, one after the other, a killed earlier run's power-on first.
async fn run_all(
    json: bool,
    client: &Client,
    ids: Vec<(u64, Option<Target>)>,
    request: &OfflineRequest,
    pending: &Pending,
) -> Exit {
    let stop = Stop::on_signals();
    let mut exit = Exit::Success;
    for (id, agent) in ids {
        if stop.requested() {
            break;
        }
        if left_off(client, pending, id).await {
            eprintln!(
                "freezeframe: warning: an earlier offline run of Droplet {id} did not finish (it is \
                 recorded, or tagged {PENDING_TAG}): powering it on first"
            );
            let recovered = recover_one(client, pending, id).await;
            if !recovered.succeeded {
                exit = exit.max(recovered.exit);
                print(json, &recovered);
                continue;
            }
        }
        let report = snapshot(client, id, agent.as_ref(), request, pending, &stop).await;
        exit = exit.max(report.exit);
        print(json, &report);
    }
    exit
}

fn print(json: bool, report: &OfflineReport) {
    if json {
        crate::outln!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        freezeframe_agent::stdout::write(text(report).as_bytes());
    }
}

/// What offline runs and `recover` do with the API.
const ACCESS: Access = Access {
    scopes: &[
        "account:read",
        "droplet:read",
        "droplet:update",
        "image:create",
        "actions:read",
        "tag:create",
    ],
    timeout: Duration::from_secs(15),
    why: "--offline and recover drive the DigitalOcean API",
};

/// The API client with the user's token, and the pending power-ons' records.
pub(crate) fn setup(api_url: &str) -> Result<(Client, Pending), Failure> {
    Ok((api::from_env(api_url, &ACCESS)?, Pending::new()?))
}

#[cfg(test)]
mod tests;
