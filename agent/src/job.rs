//! One snapshot job, from settings to report, and the plan that `plan` shows: what the one-shot
//! `freezeframe-agent snapshot` and the D-Bus service both run.

use crate::config::{ProviderSettings, Settings};
use crate::freeze::plan::{Plan, Selection};
use crate::freeze::{self, LiveFilesystems, PlanFromSystemError};
use crate::history::{self, LastDrill, RunRecord};
use crate::naming::{self, OwnNames, SnapshotName};
use crate::provider::digitalocean::DigitalOcean;
use crate::provider::local_image::LocalImage;
use crate::provider::Provider;
use crate::quiesce::assembly::{Detection, QuiescePlan};
use crate::quiesce::auto::Handler;
use crate::runtime::{self, RuntimeError};
use crate::transaction::ports::Barrier;
use crate::transaction::{
    Interrupt, NoObserver, Observer, Refusal, Report, Retention, SnapshotSpec, Transaction,
};
use crate::{dbus, logind, metrics, systemd};
pub(crate) use freezeframe_contract::plan::{DatabaseDetection, DetectedUnit, SnapshotPlan};
use freezeframe_contract::Exit;

/// What the caller asks of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobRequest {
    /// A fixed name instead of `snapshot.name_template`.
    pub name: Option<String>,
    /// Wait until the provider reports the snapshot complete.
    pub wait: bool,
    /// A bound on the frozen window below `freeze.max_freeze` (a group's, say); never above it.
    pub max_freeze: Option<std::time::Duration>,
}

/// Why a job could not start. Once it started, failures are in its [`Report`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// The name asked for is not a valid snapshot name.
    #[error(transparent)]
    Name(naming::BadName),
    /// The plan could not be made.
    #[error("cannot plan which filesystems to freeze: {0}")]
    Plan(#[from] PlanFromSystemError),
    /// The runtime directory is unusable, or another run holds it.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// What an earlier run left frozen or owed could not be recovered.
    #[error("cannot recover from an earlier run: {0}")]
    Recover(#[source] std::io::Error),
    /// This Droplet is snapshotted offline, from another machine.
    #[error(
        "snapshot.strategy = \"offline\": this Droplet is snapshotted powered off, which it cannot \
         do to itself (a Droplet that is off cannot power itself on), so its agent takes no \
         snapshot; run `freezeframe -H <this host> snapshot --offline` (or `--tag`) from another \
         machine, and disable this machine's timer (`systemctl disable --now \
         freezeframe-snapshot.timer`); nothing was done"
    )]
    Offline,
}

impl JobError {
    /// Whether another run holds the runtime directory.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, JobError::Runtime(RuntimeError::Busy { .. }))
    }
}

/// The filesystems a run would freeze, in order, and what it skips.
pub(crate) fn freeze_plan(settings: &Settings) -> Result<Plan, PlanFromSystemError> {
    freeze::plan_from_system(Selection {
        mountpoints: settings.freeze.mountpoints.as_deref(),
        exclude: &settings.freeze.exclude,
    })
}

/// [`freeze_plan`] on the blocking pool: it stats every mountpoint, and a stat waits while a
/// (network) filesystem hangs.
async fn freeze_plan_off_workers(settings: &Settings) -> Result<Plan, PlanFromSystemError> {
    let settings = settings.clone();
    crate::blocking::run(move || freeze_plan(&settings)).await
}

/// The provider the settings name.
pub(crate) fn provider(settings: &Settings) -> Provider {
    match &settings.snapshot.provider {
        ProviderSettings::LocalImage { image_dir } => {
            Provider::LocalImage(LocalImage::new(image_dir.clone()))
        }
        ProviderSettings::DigitalOcean(s) => Provider::DigitalOcean(Box::new(DigitalOcean::new(
            s.clone(),
            settings.snapshot.keep_last > 0,
        ))),
    }
}

/// The names this machine gives its snapshots, for retention.
pub(crate) fn own_names(settings: &Settings) -> OwnNames {
    OwnNames {
        template: settings.snapshot.name_template.clone(),
        host: naming::hostname(),
    }
}

/// Asks systemd (when it is there) which databases run, and reads the hooks directory.
pub(crate) async fn quiesce_plan(settings: &Settings, bus: Option<&zbus::Connection>) -> QuiescePlan {
    let units = systemd::connect_or_unreachable(bus).await;
    QuiescePlan::discover(&settings.quiesce, units).await
}

/// What a snapshot would freeze and quiesce now.
pub(crate) async fn snapshot_plan(settings: &Settings) -> Result<SnapshotPlan, PlanFromSystemError> {
    let plan = freeze_plan_off_workers(settings).await?;
    let bus = dbus::system_bus().await.ok();
    let quiesce = quiesce_plan(settings, bus.as_ref()).await;
    Ok(describe(settings, plan, &quiesce))
}

/// The plan as `plan` shows it.
fn describe(settings: &Settings, plan: Plan, quiesce: &QuiescePlan) -> SnapshotPlan {
    SnapshotPlan {
        provider: settings.snapshot.provider.name().to_string(),
        max_freeze: settings.freeze.max_freeze,
        quiesce: quiesce_lines(quiesce),
        databases: detection(quiesce),
        not_quiesced: quiesce.unquiesced(),
        freeze_order: plan.targets,
        skipped: plan.skipped,
    }
}

/// What a dry run found: the plan, and what a run would meet before its freeze.
pub(crate) struct DryRun {
    pub(crate) plan: SnapshotPlan,
    /// The quiescers' warnings, or why the run would stop.
    pub(crate) preflight: Result<Vec<String>, WouldFail>,
}

/// Why a run would stop before it quiesced or froze anything.
pub(crate) enum WouldFail {
    /// The runtime directory is unusable, or another run holds it.
    Runtime(RuntimeError),
    /// The transaction's preflight refused (the filesystems, the provider, a quiescer).
    Preflight(Refusal),
}

impl std::fmt::Display for WouldFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WouldFail::Runtime(e) => write!(f, "{e}"),
            WouldFail::Preflight(refusal) => write!(f, "{}", refusal.message),
        }
    }
}

/// The exit code of a run stopped by its runtime directory: busy is 75 (try again later),
/// a folder that is not private the owner's configuration to fix.
pub(crate) fn runtime_exit(e: &RuntimeError) -> Exit {
    match e {
        RuntimeError::Busy { .. } => Exit::Busy,
        RuntimeError::Dir { .. } => Exit::Failed,
        // The folder the configuration names (or its default) is the owner's to fix.
        RuntimeError::NotPrivate { .. } => Exit::Usage,
    }
}

impl WouldFail {
    /// The exit code the snapshot would have ended with, as for its report.
    fn exit(&self) -> Exit {
        match self {
            WouldFail::Runtime(e) => runtime_exit(e),
            WouldFail::Preflight(refusal) if refusal.setup => Exit::Usage,
            WouldFail::Preflight(_) => Exit::Failed,
        }
    }
}

impl DryRun {
    /// The dry run as both programs print it and the bus answers it.
    pub(crate) fn answer(&self) -> freezeframe_contract::DryRun {
        let (exit, warnings, error) = match &self.preflight {
            Ok(warnings) => (Exit::Success, warnings.clone(), None),
            Err(why) => (why.exit(), Vec::new(), Some(why.to_string())),
        };
        freezeframe_contract::DryRun {
            plan: self.plan.clone(),
            preflight: freezeframe_contract::Preflight {
                passed: error.is_none(),
                warnings,
                error,
                exit: exit.code(),
            },
        }
    }
}

/// A dry run: the plan, then everything a run checks before it quiesces or freezes (the
/// runtime directory and its lock, the filesystems, the provider with its token and its
/// Droplet, the quiescers), with nothing made, locked, recovered or recorded.
pub(crate) async fn dry_run(settings: &Settings, request: &JobRequest) -> Result<DryRun, JobError> {
    if let Some(name) = &request.name {
        naming::check_name(name).map_err(JobError::Name)?;
    }
    if settings.snapshot.strategy == crate::config::Strategy::Offline {
        return Err(JobError::Offline);
    }
    let plan = freeze_plan(settings)?;
    let bus = dbus::system_bus().await.ok();
    let quiesce = quiesce_plan(settings, bus.as_ref()).await;
    let described = describe(settings, plan.clone(), &quiesce);
    let runtime_dir = settings.runtime_dir.clone();
    if let Err(e) = crate::blocking::run(move || runtime::check_usable(&runtime_dir)).await {
        return Ok(DryRun {
            plan: described,
            preflight: Err(WouldFail::Runtime(e)),
        });
    }
    let mut provider = match &settings.snapshot.provider {
        ProviderSettings::LocalImage { image_dir } => {
            Provider::LocalImage(LocalImage::checking_only(image_dir.clone()))
        }
        ProviderSettings::DigitalOcean(_) => provider(settings),
    };
    let mut filesystems = LiveFilesystems::new(plan.targets.clone(), &settings.runtime_dir).checking_only();
    let preflight = Transaction {
        filesystems: &mut filesystems,
        provider: provider.port(),
        quiescers: quiesce.quiescers(),
        observer: &NoObserver,
        spec: SnapshotSpec {
            name: std::sync::Arc::new(snapshot_name(settings, request, None)),
            max_freeze: settings.freeze.max_freeze,
            wait: request.wait,
            on_quiesce_failure: settings.quiesce.on_failure,
            retention: None,
            unquiesced: quiesce.unquiesced(),
        },
        skipped: plan.skipped,
        interrupt: Interrupt::never(),
        barrier: None,
    }
    .preflight_only()
    .await
    .map_err(WouldFail::Preflight);
    Ok(DryRun {
        plan: described,
        preflight,
    })
}

/// The name a run gives its snapshot: the one asked for, or the template's (a group member's
/// carries its group's id).
fn snapshot_name(settings: &Settings, request: &JobRequest, group: Option<String>) -> SnapshotName {
    match &request.name {
        Some(name) => SnapshotName::Fixed(name.clone()),
        None => SnapshotName::Template {
            template: match &group {
                Some(_) => settings.snapshot.group_name_template.clone(),
                None => settings.snapshot.name_template.clone(),
            },
            host: naming::hostname(),
            at: std::time::SystemTime::now(),
            group,
        },
    }
}

/// The quiescers a plan lists, in prepare order.
fn quiesce_lines(quiesce: &QuiescePlan) -> Vec<String> {
    let mut lines = match &quiesce.hooks {
        Ok(found) => found
            .hooks
            .iter()
            .map(|h| format!("hook {}", h.display()))
            .chain(found.passed_over.iter().map(|why| format!("not a hook: {why}")))
            .collect(),
        Err(e) => vec![format!("hooks: refused: {e}")],
    };
    lines.extend(
        quiesce
            .quiescers()
            .iter()
            .filter(|q| q.name() != "hooks")
            .map(|q| q.name().to_string()),
    );
    lines.extend(quiesce.containers.left_alone.iter().cloned());
    lines
}

/// The database units detection found and what handles each.
fn detection(quiesce: &QuiescePlan) -> DatabaseDetection {
    let mut seen = DatabaseDetection {
        enabled: true,
        systemd: None,
        error: None,
        units: None,
    };
    match &quiesce.detection {
        Detection::Off => seen.enabled = false,
        Detection::NoSystemd(e) => seen.systemd = Some(e.clone()),
        Detection::Failed(e) => seen.error = Some(e.clone()),
        Detection::Found(found) => {
            seen.units = Some(
                found
                    .iter()
                    .map(|d| DetectedUnit {
                        unit: d.unit.clone(),
                        kind: d.kind.as_str().to_string(),
                        main_pid: d.main_pid,
                        handled_by: match &d.handler {
                            Handler::Native(q) => format!("native {} quiescer", q.kind()),
                            Handler::Configured => "a configured [[quiescer]]".to_string(),
                            Handler::Unhandled(_) => "nothing".to_string(),
                        },
                        note: match &d.handler {
                            Handler::Unhandled(why) => Some(why.to_string()),
                            _ => None,
                        },
                    })
                    .collect(),
            )
        }
    }
    seen
}

/// Takes one snapshot: plans, locks the runtime directory (recovering what an earlier run left
/// frozen), detects what to quiesce, holds a shutdown inhibitor, and runs the transaction.
///
/// A member of a consistency group passes its `barrier`: the run waits there for the group,
/// names its snapshot with the group's template, and leaves retention to the group's.
pub(crate) async fn execute(
    settings: &Settings,
    request: &JobRequest,
    observer: &dyn Observer,
    interrupt: Interrupt,
    barrier: Option<&mut dyn Barrier>,
) -> Result<Report, JobError> {
    let started = std::time::SystemTime::now();
    if let Some(name) = &request.name {
        naming::check_name(name).map_err(JobError::Name)?;
    }
    if settings.snapshot.strategy == crate::config::Strategy::Offline {
        return Err(JobError::Offline);
    }
    let plan = freeze_plan_off_workers(settings).await?;
    let ours = own_names(settings);
    let name = snapshot_name(settings, request, barrier.as_ref().map(|b| b.group().to_string()));
    let (_runtime_dir, lock) = runtime::open_locked(&settings.runtime_dir).await?;
    let bus = dbus::system_bus().await.ok();
    // What an earlier, dead agent left: its filesystems thawed, then the resumes it owed.
    let recovered = runtime::recover(&settings.runtime_dir, bus.as_ref(), settings.quiesce.hook_timeout)
        .await
        .map_err(JobError::Recover)?;
    for line in recovered.text("").lines().filter(|_| !recovered.is_empty()) {
        tracing::warn!("an earlier run left this undone: {line}");
    }
    let mut provider = provider(settings);
    let quiesce = quiesce_plan(settings, bus.as_ref())
        .await
        .recording_in(settings.runtime_dir.clone())
        .frozen_at_most(settings.freeze.max_freeze);
    // Held until the run ends: a reboot asked for meanwhile waits for the thaw and resume.
    let _inhibitor = match &bus {
        Some(bus) => logind::inhibit_shutdown(bus)
            .await
            .map_err(|e| tracing::debug!("no shutdown inhibitor: {e}"))
            .ok(),
        None => None,
    };
    let mut filesystems = LiveFilesystems::new(plan.targets.clone(), &settings.runtime_dir)
        .with_rcu_expediting(settings.freeze.expedite_rcu)
        .with_probe(settings.freeze.probe);
    let mut report = Transaction {
        filesystems: &mut filesystems,
        provider: provider.port(),
        quiescers: quiesce.quiescers(),
        observer,
        spec: snapshot_spec(
            settings,
            request,
            name,
            barrier.is_none(),
            ours,
            quiesce.unquiesced(),
        ),
        skipped: plan.skipped.clone(),
        interrupt,
        barrier: barrier.map(|b| b as &mut dyn Barrier),
    }
    .run()
    .await;
    report.droplet_id = provider.droplet_id();
    let tags_settled = tag_earlier_runs(settings, &mut provider).await;
    let drill = drill_for_metrics(settings, &mut provider).await;
    // The thaw is long past: the last result may go to disk, for `status` whichever way the
    // run was started (the service, or a one-shot `freezeframe-agent snapshot`). Flushed files,
    // so off the async workers; the lock goes with them and is released only once they are
    // written, even if this run's task is dropped meanwhile: no other run can freeze the
    // filesystem they are written to before then.
    let settings = settings.clone();
    let last = report.clone();
    crate::blocking::run(move || {
        record_last_report(&settings.runtime_dir, &last);
        let run = RunRecord::of(&last, started, std::time::SystemTime::now());
        history::record(
            &settings.history.file,
            settings.history.keep,
            &settings.runtime_dir,
            Some(run),
            &tags_settled,
        );
        if let Some(drill) = drill {
            drill.keep_if_newer(&settings.verify.state_file);
        }
        metrics::publish(&settings);
        drop(lock);
    })
    .await;
    Ok(report)
}

/// What the transaction is asked: the name, the bounds (the request's `max_freeze`, never
/// above `freeze.max_freeze`) and the policies. A group member's run (`alone` false) keeps no
/// retention of its own: a group is kept or deleted whole, by its coordinator.
pub(crate) fn snapshot_spec(
    settings: &Settings,
    request: &JobRequest,
    name: SnapshotName,
    alone: bool,
    ours: OwnNames,
    unquiesced: Vec<String>,
) -> SnapshotSpec {
    let configured = settings.freeze.max_freeze;
    SnapshotSpec {
        name: std::sync::Arc::new(name),
        max_freeze: request.max_freeze.map_or(configured, |m| m.min(configured)),
        wait: request.wait,
        on_quiesce_failure: settings.quiesce.on_failure,
        retention: alone.then_some(Retention {
            keep_last: settings.snapshot.keep_last as usize,
            ours: std::sync::Arc::new(ours),
        }),
        unquiesced,
    }
}

/// Tags the snapshots of earlier runs of this Droplet that did not wait for theirs to complete
/// with their level, after the thaw and bounded in time like the drill's lookup; answers the
/// runs (by snapshot name) that owe no tag any more.
async fn tag_earlier_runs(settings: &Settings, provider: &mut Provider) -> Vec<String> {
    let Some(droplet) = provider.droplet_id() else {
        return Vec::new();
    };
    let owed = {
        let file = settings.history.file.clone();
        crate::blocking::run(move || history::tags_owed(&file, droplet)).await
    };
    if owed.is_empty() {
        return Vec::new();
    }
    tokio::time::timeout(DRILL_LOOKUP_TIMEOUT, provider.tag_earlier(&owed))
        .await
        .unwrap_or_else(|_| {
            tracing::info!(
                "earlier runs' snapshots were not tagged within {DRILL_LOOKUP_TIMEOUT:?} (next run)"
            );
            Vec::new()
        })
}

/// The newest restore drill the provider records on this machine's snapshots (one run
/// elsewhere leaves its verdict and time as tags), when anything reads the metrics here: asked
/// after the thaw, bounded in time, so a slow API delays the metrics, never a freeze.
async fn drill_for_metrics(settings: &Settings, provider: &mut Provider) -> Option<LastDrill> {
    let wanted = {
        let settings = settings.clone();
        crate::blocking::run(move || metrics::wanted(&settings)).await
    };
    if !wanted {
        return None;
    }
    let seen = tokio::time::timeout(DRILL_LOOKUP_TIMEOUT, provider.last_drill())
        .await
        .unwrap_or_else(|_| {
            tracing::info!("the restore drills' tags were not read within {DRILL_LOOKUP_TIMEOUT:?}");
            None
        })?;
    Some(LastDrill {
        unix_seconds: seen.unix_seconds,
        snapshot: seen.snapshot,
        verified: seen.verified,
    })
}

/// How long a run waits for the restore drills' tags after its thaw.
const DRILL_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The last run's report, if there was one.
pub(crate) fn last_report(runtime_dir: &std::path::Path) -> Option<Report> {
    let text = std::fs::read_to_string(last_report_path(runtime_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Where the last run's report is kept, as JSON.
pub(crate) fn last_report_path(runtime_dir: &std::path::Path) -> std::path::PathBuf {
    runtime_dir.join("last-report.json")
}

/// Keeps `report` (as JSON) as the last run's; a failure to write it is only logged.
pub(crate) fn record_last_report(runtime_dir: &std::path::Path, report: &Report) {
    let path = last_report_path(runtime_dir);
    let json = serde_json::to_string(report).unwrap_or_default();
    if let Err(e) = crate::atomic_file::replace(&path, json.as_bytes(), 0o600) {
        tracing::warn!("cannot keep the last report in {}: {e}", path.display());
    }
}
