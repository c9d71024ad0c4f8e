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

use crate::client::Target;
use crate::commands::{Exit, Failure};
use freezeframe_agent::provider::digitalocean::client::{ApiError, Client};
use freezeframe_agent::provider::digitalocean::labels;
use freezeframe_agent::provider::digitalocean::limits::{self, VolumeLimit};
use freezeframe_agent::provider::digitalocean::{Droplet, ListedDroplet, PowerAction};
use freezeframe_contract::AgentStatus;
use freezeframe_contract::RecordedConsistency;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What an offline run would do to one Droplet (`--offline --dry-run`).
#[derive(Debug, Clone, Serialize)]
pub struct OfflinePlan {
    pub droplet_id: u64,
    pub droplet_name: String,
    pub status: String,
    /// Why a run would stop before the shutdown, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The attached volumes, snapshotted too while the Droplet is off.
    pub volumes: Vec<String>,
    /// An earlier run left it waiting for its power-on.
    pub left_off: bool,
    /// What its agent would have quiesced for a live snapshot (the shutdown stops them all),
    /// when an agent answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// The steps, with their bounds.
    pub steps: Vec<String>,
}

/// Why an offline run of `droplet` must not start, if it must not: it is not active, it has a
/// pending event, or the platform would refuse a snapshot of one of its volumes now (checked
/// before the shutdown, not discovered with the Droplet off).
async fn refusal(client: &Client, droplet: &Droplet) -> Result<Option<String>, String> {
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
        .map_err(|e| api(&format!("cannot list the actions of Droplet {id}"), e))?;
    if droplet.locked || actions.iter().any(|a| a.status == "in-progress") {
        return Ok(Some(
            "it has a pending event; wait for it to finish and try again".into(),
        ));
    }
    for volume_id in &droplet.volume_ids {
        let volume = client.volume(volume_id).await.map_err(|e| {
            api(
                &format!("cannot read volume {volume_id} attached to Droplet {id}"),
                e,
            )
        })?;
        if let Err(limit) = limits::check_volume(client, &volume.id, &volume.name).await {
            return match limit {
                VolumeLimit::Api { .. } => Err(limit.to_string()),
                _ => Ok(Some(limit.to_string())),
            };
        }
    }
    Ok(None)
}

/// What an offline run of Droplet `id` would do, asking its agent (`agent`) what it would have
/// quiesced; reads, changes nothing.
pub async fn plan(
    client: &Client,
    id: u64,
    agent: Option<&Target>,
    request: &OfflineRequest,
    pending: &Pending,
) -> Result<OfflinePlan, String> {
    let droplet = client
        .droplet(id)
        .await
        .map_err(|e| api(&format!("cannot read Droplet {id}"), e))?;
    let refused = refusal(client, &droplet).await?;
    let bound = |d: Duration| humantime::format_duration(d).to_string();
    let mut steps = vec![
        format!("record the pending power-on (file, and the tag {PENDING_TAG})"),
        format!(
            "shutdown, and wait up to {} for the guest to power off",
            bound(request.shutdown_timeout)
        ),
    ];
    if request.force_power_off {
        steps.push("past that: power_off (cuts the power)".into());
    } else {
        steps.push("past that: give up, the Droplet left running (--force-power-off cuts the power)".into());
    }
    steps.push(match droplet.volume_ids.len() {
        0 => "snapshot the Droplet while off".to_string(),
        n => format!("snapshot the Droplet and its {n} attached volume(s) while off (volumes are not part of a Droplet snapshot)"),
    });
    steps.push(format!(
        "power_on once the snapshot releases the Droplet, and wait up to {} for it to be active; \
         a failed power-on tried again for up to {} before the Droplet is left to `freezeframe recover`",
        bound(request.boot_timeout),
        bound(request.power_on_deadline)
    ));
    Ok(OfflinePlan {
        droplet_id: id,
        left_off: pending.all().iter().any(|p| p.droplet_id == id)
            || droplet.tags.iter().any(|t| t == PENDING_TAG),
        droplet_name: droplet.name,
        status: droplet.status,
        refused,
        volumes: droplet.volume_ids,
        databases: match agent {
            Some(target) => agent_plan(target).await.ok().map(|p| p.quiesce),
            None => None,
        },
        steps,
    })
}

/// The plan for people.
fn plan_text(p: &OfflinePlan) -> String {
    let mut out = format!(
        "Droplet {} ({}), {}:
",
        p.droplet_id, p.droplet_name, p.status
    );
    if p.left_off {
        out.push_str("  an earlier offline run did not finish: it is powered on first\n");
    }
    if let Some(why) = &p.refused {
        out.push_str(&format!("  would NOT run: {why}\n"));
    }
    if !p.volumes.is_empty() {
        out.push_str(&format!(
            "  warning: {} attached volume(s), not part of a Droplet snapshot: each is snapshotted too\n",
            p.volumes.len()
        ));
    }
    match p.databases.as_deref() {
        Some([]) => out.push_str("  its agent would quiesce nothing for a live snapshot\n"),
        Some(quiesced) => out.push_str(&format!(
            "  the shutdown stops what its agent would quiesce for a live snapshot: {}\n",
            quiesced.join("; ")
        )),
        None => {}
    }
    for (i, step) in p.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    out
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

/// The pending power-ons this user's runs recorded: one file per Droplet under
/// `$XDG_STATE_HOME/freezeframe/offline` (default `~/.local/state/freezeframe/offline`).
#[derive(Debug, Clone)]
pub struct Pending {
    dir: PathBuf,
}

/// One recorded pending power-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPowerOn {
    pub droplet_id: u64,
    pub droplet_name: String,
    /// When the run was about to shut the Droplet down (RFC 3339).
    pub since: String,
}

impl Pending {
    pub fn new() -> Result<Pending, Failure> {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .ok_or_else(|| {
                Failure::new(
                    Exit::Usage,
                    "--offline records a pending power-on under the user's state directory: set HOME or XDG_STATE_HOME",
                )
            })?;
        Ok(Pending {
            dir: base.join("freezeframe/offline"),
        })
    }

    fn file(&self, droplet: u64) -> PathBuf {
        self.dir.join(format!("{droplet}.json"))
    }

    fn record(&self, entry: &PendingPowerOn) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).unwrap_or_default();
        freezeframe_agent::replace_file(&self.file(entry.droplet_id), &json, 0o644)
    }

    fn clear(&self, droplet: u64) {
        let _ = std::fs::remove_file(self.file(droplet));
    }

    /// Every recorded pending power-on.
    pub fn all(&self) -> Vec<PendingPowerOn> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }
}

/// Runs the offline snapshot of Droplet `id`; `agent`, if given, is how its agent is reached
/// (waited for after the boot when it answered before the shutdown).
pub async fn snapshot(
    client: &Client,
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
    if let Err(why) = run.go(request).await {
        run.report.error = Some(why);
    }
    if run.report.shut_down {
        let mut after = run
            .power_on(request.boot_timeout, request.power_on_deadline)
            .await;
        if let (Ok(()), Some(target)) = (&after, agent) {
            after = run.agent_back(target, request.boot_timeout).await;
        }
        if let Err(why) = after {
            let error = run.report.error.take();
            run.report.error = Some(match error {
                Some(first) => format!("{first}; and {why}"),
                None => why,
            });
        }
    }
    // Recorded once the Droplet runs again: the tags cost no downtime.
    if run.report.error.is_none() && run.report.consistency.is_some() {
        if let Err(why) = run.label().await {
            run.report.warnings.push(why);
        }
    }
    run.report.succeeded = run.report.error.is_none();
    run.report
}

/// No agent to wait for after the boot, and why.
fn not_waited_for<'a>(target: &Target, why: &str) -> Option<&'a Target> {
    eprintln!(
        "freezeframe: {target}: no agent answers ({why}): the run does not wait for one after the boot"
    );
    None
}

/// What the agent at `target` would do for a live snapshot (its plan asks nothing of the API),
/// or why it did not say within [`AGENT_ANSWERS`].
async fn agent_plan(target: &Target) -> Result<freezeframe_contract::SnapshotPlan, String> {
    within_answer_time(crate::commands::plan(target)).await
}

/// The status of the agent at `target` (which asks nothing of the API), or why it did not
/// give it within [`AGENT_ANSWERS`].
async fn agent_status(target: &Target) -> Result<AgentStatus, String> {
    within_answer_time(async {
        let connection = crate::client::connect(target).await?;
        let agent = crate::commands::proxy(target, &connection).await?;
        let status = agent
            .status()
            .await
            .map_err(|e| crate::commands::call_failure(target, e))?;
        crate::commands::read(target, &status)
    })
    .await
}

/// `asked`, bounded by [`AGENT_ANSWERS`]; its failure in words.
async fn within_answer_time<T>(
    asked: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, String> {
    match tokio::time::timeout(AGENT_ANSWERS, asked).await {
        Ok(answer) => answer.map_err(|f| f.message),
        Err(_) => Err(format!("no answer within {} s", AGENT_ANSWERS.as_secs())),
    }
}

/// One Droplet's run, as it goes.
struct Run<'a> {
    client: &'a Client,
    id: u64,
    pending: &'a Pending,
    stop: &'a Stop,
    report: OfflineReport,
    /// When the shutdown was requested.
    down_at: Option<Instant>,
}

impl Run<'_> {
    fn step(&mut self, step: &'static str, since: Instant) {
        self.report.steps.push(Step {
            step,
            ms: freezeframe_contract::report::ms(since.elapsed()),
        });
    }

    /// Preflight, shutdown, snapshot; the power-on follows in [`snapshot`] on every path.
    async fn go(&mut self, request: &OfflineRequest) -> Result<(), String> {
        let (client, id) = (self.client, self.id);
        let started = Instant::now();
        let droplet = client
            .droplet(id)
            .await
            .map_err(|e| api(&format!("cannot read Droplet {id}"), e))?;
        self.report.droplet_name = droplet.name.clone();
        if let Some(why) = refusal(client, &droplet).await? {
            return Err(format!(
                "Droplet {id} ({}): {why}; nothing was done",
                droplet.name
            ));
        }
        self.report.snapshot_name = request.name.clone().unwrap_or_else(|| {
            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let compact: String = at.chars().filter(|c| c.is_ascii_digit()).collect();
            format!("{}-{}-{}-offline", droplet.name, &compact[..8], &compact[8..14])
        });
        self.step("preflight", started);

        if self.stop.requested() {
            return Err("interrupted before the shutdown; nothing was done".into());
        }
        // The record of the power-on this run owes, before anything is powered off.
        let entry = PendingPowerOn {
            droplet_id: id,
            droplet_name: droplet.name.clone(),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        self.pending
            .record(&entry)
            .map_err(|e| format!("cannot record the pending power-on ({e}); nothing was powered off"))?;
        if let Err(e) = client.tag_droplet(PENDING_TAG, id).await {
            self.pending.clear(id);
            return Err(api(
                &format!("cannot tag Droplet {id} {PENDING_TAG} (the record a killed run leaves); nothing was powered off"),
                e,
            ));
        }

        let asked = Instant::now();
        self.down_at = Some(asked);
        self.report.shut_down = true;
        self.report.running = false;
        client
            .droplet_power(id, PowerAction::Shutdown)
            .await
            .map_err(|e| api("the shutdown request was refused", e))?;
        match self.wait_for("off", request.shutdown_timeout).await? {
            true => self.step("shutdown", asked),
            false if request.force_power_off => {
                self.step("shutdown", asked);
                let cut = Instant::now();
                client
                    .droplet_power(id, PowerAction::PowerOff)
                    .await
                    .map_err(|e| api("the power_off request was refused", e))?;
                self.report.hard_power_off = true;
                if !self.wait_for("off", Duration::from_secs(60)).await? {
                    return Err("the Droplet did not power off within a minute of power_off".into());
                }
                self.step("power_off", cut);
            }
            false => {
                return Err(format!(
                    "the guest did not power off within {} of the shutdown request (--shutdown-timeout); nothing was snapshotted (--force-power-off cuts the power past that bound)",
                    humantime::format_duration(request.shutdown_timeout)
                ))
            }
        }

        let taking = Instant::now();
        let action = client
            .snapshot_droplet(id, &self.report.snapshot_name, Duration::from_secs(60))
            .await
            .map_err(|e| api("the snapshot request was not accepted", e))?;
        self.report.action_id = Some(action.id);
        for volume in &droplet.volume_ids {
            let made = client
                .snapshot_volume(volume, &self.report.snapshot_name, Duration::from_secs(60))
                .await
                .map_err(|e| api(&format!("the snapshot of volume {volume} was not accepted"), e))?;
            self.report.volume_snapshots.push(made.id);
        }
        self.report.consistency = Some("offline");
        self.wait_for_action(action.id).await?;
        self.step("snapshot", taking);
        Ok(())
    }

    /// Waits until the Droplet's status is `want` and it is not locked: true, or false when
    /// `bound` passed; Err when a signal stops the run (not while powering on).
    async fn wait_for(&self, want: &str, bound: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + bound;
        let mut backoff = Backoff::up_to(POLL_POWER);
        loop {
            match self.client.droplet(self.id).await {
                Ok(d) if d.status == want && !d.locked => return Ok(true),
                Ok(_) => {}
                Err(e) if e.retryable() => {}
                Err(e) => return Err(api(&format!("cannot read Droplet {}", self.id), e)),
            }
            if self.stop.requested() && want != "active" {
                return Err("interrupted by a signal".into());
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            backoff.pause().await;
        }
    }

    /// Waits for the snapshot action to end (the Droplet stays locked until then).
    async fn wait_for_action(&self, action: u64) -> Result<(), String> {
        let deadline = Instant::now() + SNAPSHOT_BOUND;
        let mut backoff = Backoff::up_to(POLL_SNAPSHOT);
        loop {
            match self.client.action(action).await {
                Ok(a) if a.status == "completed" => return Ok(()),
                Ok(a) if a.status == "errored" => {
                    return Err(format!("snapshot action {action} errored on DigitalOcean's side"))
                }
                Ok(_) => {}
                Err(e) if e.retryable() => {}
                Err(e) => return Err(api(&format!("cannot follow snapshot action {action}"), e)),
            }
            if Instant::now() >= deadline {
                return Err(format!("snapshot action {action} did not end within 6 hours"));
            }
            backoff.pause().await;
        }
    }

    /// Tags the snapshot and the volumes' with `freezeframe:offline`, as live runs record their
    /// level: the control panel, `doctl` and `freezeframe list` show it.
    async fn label(&self) -> Result<(), String> {
        let name = &self.report.snapshot_name;
        let images: Vec<String> = self
            .client
            .droplet_snapshots(self.id)
            .await
            .map_err(|e| api("the snapshot is taken, but it could not be found to tag it", e))?
            .into_iter()
            .filter(|s| &s.name == name)
            .map(|s| s.id.to_string())
            .collect();
        let tag = labels::consistency_tag(RecordedConsistency::Offline);
        self.client
            .tag_snapshots(&tag, &images, &self.report.volume_snapshots)
            .await
            .map_err(|e| {
                api(
                    &format!("the snapshot is taken, but it could not be tagged {tag}"),
                    e,
                )
            })
    }

    /// Powers the Droplet on, waits until it is active, and clears the record of the pending
    /// power-on. The one step that does not give up at a failure: a refused, rate-limited or
    /// unanswered call is tried again, after the API's `retry-after` or a backoff, until
    /// `patience` passed with nothing holding the Droplet (a running snapshot's lock, up to
    /// [`SNAPSHOT_BOUND`], does not count); only then is the Droplet left to `recover`. Each try
    /// reads the Droplet first, and power_on is sent again only to a Droplet that is off, not
    /// locked and with no power_on in progress: a request whose answer was lost but which the
    /// platform took is not repeated.
    async fn power_on(&mut self, boot: Duration, patience: Duration) -> Result<(), String> {
        let (client, id) = (self.client, self.id);
        let booting = Instant::now();
        let held_until = booting + SNAPSHOT_BOUND;
        let mut deadline = booting + patience;
        let mut poll = Backoff::up_to(POLL_SNAPSHOT);
        let mut retry = Backoff::up_to(POLL_RETRY);
        let mut asked: Option<Instant> = None;
        let mut last = None;
        loop {
            match self.power_on_step(boot, &mut asked).await? {
                PowerOnStep::Running => break,
                PowerOnStep::Held if Instant::now() >= held_until => {
                    return Err(self.left_off("it stayed locked for 6 hours (a snapshot in progress)"))
                }
                PowerOnStep::Held => {
                    deadline = deadline.max(Instant::now() + patience);
                    poll.pause().await;
                }
                PowerOnStep::Wait => {
                    retry = Backoff::up_to(POLL_RETRY);
                    poll.pause().await;
                }
                PowerOnStep::Failed(e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let why = format!(
                            "it could not be powered on within {} (--power-on-deadline): {e}",
                            humantime::format_duration(patience)
                        );
                        return Err(self.left_off(&why));
                    }
                    let wait = match &e {
                        ApiError::RateLimited {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => retry.take(),
                    }
                    .min(deadline - now);
                    eprintln!(
                        "freezeframe: warning: Droplet {id} is off and powering it on failed ({e}):                          trying again in {}, until it runs or {} passed",
                        humantime::format_duration(wait),
                        humantime::format_duration(patience)
                    );
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
            }
            if Instant::now() >= deadline {
                let why = format!(
                    "it was not running within {} (--power-on-deadline){}",
                    humantime::format_duration(patience),
                    last.as_ref()
                        .map(|e| format!("; last failure: {e}"))
                        .unwrap_or_default()
                );
                return Err(self.left_off(&why));
            }
        }
        self.step("power_on", booting);
        self.report.running = true;
        self.report.downtime_ms = self
            .down_at
            .map(|at| freezeframe_contract::report::ms(at.elapsed()));
        if let Err(e) = client.untag_droplet(PENDING_TAG, id).await {
            eprintln!("freezeframe: warning: Droplet {id} is running, but its tag {PENDING_TAG} stays: {e}");
        }
        self.pending.clear(id);
        Ok(())
    }

    /// One look at the Droplet on the way to running it, and power_on sent when it is due.
    /// `asked`: when the platform last took a power_on of this run. Err: a failure that no
    /// later attempt mends (the token refused, the Droplet gone or in a state that does not boot).
    async fn power_on_step(
        &self,
        boot: Duration,
        asked: &mut Option<Instant>,
    ) -> Result<PowerOnStep, String> {
        let (client, id) = (self.client, self.id);
        let droplet = match client.droplet(id).await {
            Ok(d) => d,
            Err(e) if e.retryable() => return Ok(PowerOnStep::Failed(e)),
            Err(e) => return Err(self.left_off(&api("it cannot be read to power it on", e))),
        };
        match (droplet.status.as_str(), droplet.locked) {
            ("active", false) => return Ok(PowerOnStep::Running),
            ("active" | "off", true) if asked.is_some() => return Ok(PowerOnStep::Wait),
            ("active" | "off", true) => return Ok(PowerOnStep::Held),
            ("off", false) => {}
            (status, _) => {
                return Err(self.left_off(&format!(
                    "it is {status}, which cannot be powered on (see the control panel)"
                )))
            }
        }
        if asked.is_some_and(|at| at.elapsed() < boot) {
            return Ok(PowerOnStep::Wait);
        }
        if asked.is_some() {
            eprintln!(
                "freezeframe: warning: Droplet {id} is still off {} after power_on (--boot-timeout): asking again",
                humantime::format_duration(boot)
            );
        }
        // A power_on whose answer never came may have been taken: its action says so.
        let taken = match client.droplet_actions(id).await {
            Ok(actions) => actions
                .iter()
                .any(|a| a.kind == "power_on" && a.status == "in-progress"),
            Err(e) if e.retryable() => return Ok(PowerOnStep::Failed(e)),
            Err(e) => return Err(self.left_off(&api("its actions cannot be read", e))),
        };
        if taken {
            *asked = Some(Instant::now());
            return Ok(PowerOnStep::Wait);
        }
        match client.droplet_power(id, PowerAction::PowerOn).await {
            Ok(_) => {
                *asked = Some(Instant::now());
                Ok(PowerOnStep::Wait)
            }
            // Already on, or an action in progress: the next read says which.
            Err(ApiError::Status { status: 422, .. }) => Ok(PowerOnStep::Wait),
            Err(e) if e.retryable() => Ok(PowerOnStep::Failed(e)),
            Err(e) => Err(self.left_off(&api("the power_on request was refused", e))),
        }
    }

    /// The error of a run that leaves Droplet `id` off, said at once on stderr too (with
    /// `--json` the report goes to stdout).
    fn left_off(&self, why: &str) -> String {
        let message = format!(
            "Droplet {} is left OFF: {why}; it stays recorded and tagged {PENDING_TAG}: power it \
             on with `freezeframe recover` (with DIGITALOCEAN_TOKEN set), or in the control panel",
            self.id
        );
        eprintln!("freezeframe: error: {message}");
        message
    }
}

/// Where one look at the Droplet leaves its power-on.
enum PowerOnStep {
    /// It runs.
    Running,
    /// Locked before this run's power_on was taken: its snapshot still runs.
    Held,
    /// Booting, or just asked to: look again.
    Wait,
    /// A call failed in a way a later one may not: try again after a pause.
    Failed(ApiError),
}

impl Run<'_> {
    /// Waits until the agent at `target` answers again after the boot.
    async fn agent_back(&mut self, target: &Target, bound: Duration) -> Result<(), String> {
        let waiting = Instant::now();
        let deadline = waiting + bound;
        let mut backoff = Backoff::up_to(POLL_POWER);
        loop {
            let last = match agent_status(target).await {
                Ok(_) => break,
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "the Droplet runs, but its agent did not answer within {} of the boot: {last}",
                    humantime::format_duration(bound)
                ));
            }
            backoff.pause().await;
        }
        self.step("agent", waiting);
        self.report.agent_downtime_ms = self
            .down_at
            .map(|at| freezeframe_contract::report::ms(at.elapsed()));
        Ok(())
    }
}

/// Powers on every Droplet a killed offline run left off: those recorded under the user's
/// state directory and those tagged [`PENDING_TAG`].
pub async fn recover(client: &Client, pending: &Pending) -> Vec<OfflineReport> {
    let mut ids: Vec<u64> = pending.all().iter().map(|p| p.droplet_id).collect();
    match client.droplets_with_tag(PENDING_TAG).await {
        Ok(tagged) => ids.extend(tagged.iter().map(|d| d.id)),
        Err(e) => eprintln!("freezeframe: warning: cannot list the Droplets tagged {PENDING_TAG}: {e}"),
    }
    ids.sort_unstable();
    ids.dedup();
    let mut reports = Vec::new();
    for id in ids {
        reports.push(recover_one(client, pending, id).await);
    }
    reports
}

/// Whether an earlier run left Droplet `id` waiting for its power-on: recorded here, or
/// tagged (by a run on another machine, or one whose record is gone).
async fn left_off(client: &Client, pending: &Pending, id: u64) -> bool {
    pending.all().iter().any(|p| p.droplet_id == id)
        || client
            .droplet(id)
            .await
            .is_ok_and(|d| d.tags.iter().any(|t| t == PENDING_TAG))
}

/// Powers Droplet `id` on (once nothing holds it) and clears its record.
async fn recover_one(client: &Client, pending: &Pending, id: u64) -> OfflineReport {
    let stop = Stop::default();
    let mut run = Run {
        client,
        id,
        pending,
        stop: &stop,
        report: OfflineReport {
            droplet_id: id,
            ..OfflineReport::default()
        },
        down_at: None,
    };
    if let Err(why) = run.power_on(Duration::from_secs(300), RECOVER_PATIENCE).await {
        run.report.error = Some(why);
    }
    run.report.succeeded = run.report.error.is_none();
    run.report
}

fn api(context: &str, e: ApiError) -> String {
    format!("{context}: {e}")
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
/// other; one JSON object per Droplet with `--json`. Exit 0 when every one succeeded.
pub async fn run(cli: &crate::args::Cli, droplets: &[u64], request: &OfflineRequest) -> Exit {
    let (client, pending) = match setup(&cli.api_url) {
        Ok(both) => both,
        Err(f) => return said(f),
    };
    let ids = match named(cli, &client, droplets).await {
        Ok(ids) => ids,
        Err(f) => return said(f),
    };
    if ids.is_empty() {
        return said(Failure::new(
            Exit::Usage,
            "--offline snapshots the Droplets named by -H HOST, --droplet ID or --tag TAG: none was named",
        ));
    }
    if request.dry_run {
        let mut exit = Exit::Success;
        for (id, agent) in ids {
            match plan(&client, id, agent.as_ref(), request, &pending).await {
                Ok(p) if cli.json => crate::outln!("{}", serde_json::to_string(&p).unwrap_or_default()),
                Ok(p) => freezeframe_agent::stdout::write(plan_text(&p).as_bytes()),
                Err(why) => {
                    exit = Exit::Failed;
                    eprintln!("freezeframe: error: {why}");
                }
            }
        }
        return exit;
    }
    let stop = Stop::on_signals();
    let mut exit = Exit::Success;
    for (id, agent) in ids {
        if stop.requested() {
            break;
        }
        if left_off(&client, &pending, id).await {
            eprintln!(
                "freezeframe: warning: an earlier offline run of Droplet {id} did not finish (it is \
                 recorded, or tagged {PENDING_TAG}): powering it on first"
            );
            let recovered = recover_one(&client, &pending, id).await;
            if !recovered.succeeded {
                exit = Exit::Failed;
                print(cli.json, &recovered);
                continue;
            }
        }
        let report = snapshot(&client, id, agent.as_ref(), request, &pending, &stop).await;
        if !report.succeeded {
            exit = Exit::Failed;
        }
        print(cli.json, &report);
    }
    exit
}

/// The Droplets an offline run takes, by id, each with the way to its agent when one is known:
/// `--droplet` ids, the Droplets carrying `--tag` (their agents by public address), and `-H`
/// hosts (the Droplet the API says the host is: [`host_droplet`]). Every one is settled before
/// anything is powered off.
async fn named(
    cli: &crate::args::Cli,
    client: &Client,
    droplets: &[u64],
) -> Result<Vec<(u64, Option<Target>)>, Failure> {
    let remote = |host: crate::client::Host| Target::Remote {
        host,
        ssh_command: cli.ssh_command.clone(),
    };
    let unreachable = |what: String, e: ApiError| Failure::new(Exit::Unreachable, format!("{what}: {e}"));
    let mut named: Vec<(u64, Option<Target>)> = droplets.iter().map(|id| (*id, None)).collect();
    if let Some(tag) = &cli.tag {
        let tagged = client
            .droplets_with_tag(tag)
            .await
            .map_err(|e| unreachable(format!("cannot list the Droplets tagged `{tag}`"), e))?;
        for d in tagged {
            let agent = d.public_ipv4().and_then(|ip| ip.parse().ok()).map(remote);
            named.push((d.id, agent));
        }
    }
    if !cli.hosts.is_empty() {
        let all = client
            .droplets()
            .await
            .map_err(|e| unreachable("cannot list the account's Droplets".into(), e))?;
        for host in &cli.hosts {
            let target = remote(host.clone());
            let id = host_droplet(&all, host, &target).await?;
            named.push((id, Some(target)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    named.retain(|(id, _)| seen.insert(*id));
    Ok(named)
}

/// The Droplet that `-H host` is, by the API alone: [`which_droplet`]. What the host's agent
/// says (`digitalocean.droplet_id`) is only checked against it, never taken on its word: root on
/// that machine could name another Droplet and have the operator's token shut that one down.
/// Where the two differ, or the API knows no such Droplet, nothing is done: `--droplet ID` names
/// the Droplet instead.
async fn host_droplet(
    all: &[ListedDroplet],
    host: &crate::client::Host,
    target: &Target,
) -> Result<u64, Failure> {
    let claimed = agent_status(target).await.ok().and_then(|s| s.droplet_id);
    let refuse = |what: String| {
        Failure::new(
            Exit::Usage,
            format!(
                "-H {host}: {what}; nothing was powered off. Name the Droplet to snapshot with \
                 --droplet ID (its agent is then not waited for)"
            ),
        )
    };
    match (which_droplet(all, &host.host), claimed) {
        (Some(id), None) => Ok(id),
        (Some(id), Some(claimed)) if claimed == id => Ok(id),
        (Some(id), Some(claimed)) => Err(refuse(format!(
            "its agent says it is Droplet {claimed} (`digitalocean.droplet_id`), but by the API \
             {} is Droplet {id}: a host does not choose which Droplet is powered off; correct \
             that agent's configuration",
            host.host
        ))),
        (None, Some(claimed)) => Err(refuse(format!(
            "its agent says it is Droplet {claimed} (`digitalocean.droplet_id`), but no Droplet \
             of this account has {}'s address or name, so the API cannot confirm it: a host \
             does not choose which Droplet is powered off",
            host.host
        ))),
        (None, None) => Err(refuse(
            "no Droplet of this account has that public address or name, nor that private \
             address, and its agent names none"
                .into(),
        )),
    }
}

/// The one Droplet whose public address, or else private address, is the address `host` is
/// (itself, or what it resolves to here: what ssh reaches), or else whose name it is. None when
/// none or several are.
fn which_droplet(all: &[ListedDroplet], host: &str) -> Option<u64> {
    let by = |wanted: &dyn Fn(&ListedDroplet) -> bool| {
        let found: Vec<u64> = all.iter().filter(|d| wanted(d)).map(|d| d.id).collect();
        (found.len() == 1).then(|| found[0])
    };
    let addresses: Vec<std::net::IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, 22))
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    let at = |d: &ListedDroplet, kind: &str| {
        d.networks.v4.iter().any(|n| {
            n.kind == kind
                && n.ip_address
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| addresses.contains(&ip))
        })
    };
    by(&|d| at(d, "public"))
        .or_else(|| by(&|d| at(d, "private")))
        .or_else(|| by(&|d| d.name == host))
}

/// `recover`: powers on what killed offline runs left off, and says what it did.
pub async fn recover_all(cli: &crate::args::Cli) -> Exit {
    let (client, pending) = match setup(&cli.api_url) {
        Ok(both) => both,
        Err(f) => return said(f),
    };
    let reports = recover(&client, &pending).await;
    if reports.is_empty() && !cli.json {
        crate::outln!("nothing to recover: no offline run left a Droplet waiting for its power-on");
    }
    let mut exit = Exit::Success;
    for report in &reports {
        if !report.succeeded {
            exit = Exit::Failed;
        }
        if cli.json {
            crate::outln!("{}", serde_json::to_string(report).unwrap_or_default());
        } else {
            match &report.error {
                None => crate::outln!("Droplet {}: running again", report.droplet_id),
                Some(e) => crate::outln!("Droplet {}: FAILED: {e}", report.droplet_id),
            }
        }
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

fn said(f: Failure) -> Exit {
    eprintln!("freezeframe: error: {}", f.message);
    f.exit
}

/// The API client with the user's token, and the pending power-ons' records.
fn setup(api_url: &str) -> Result<(Client, Pending), Failure> {
    let client = crate::fleet::api_client(
        api_url,
        &[
            "droplet:read",
            "droplet:update",
            "image:create",
            "actions:read",
            "tag:create",
        ],
        "--offline and recover drive the DigitalOcean API",
    )?;
    Ok((client, Pending::new()?))
}
