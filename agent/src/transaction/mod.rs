//! The snapshot transaction: preflight → quiesce → sync → freeze → request → thaw → resume →
//! wait → report. No I/O of its own: filesystems, quiescers and the provider are traits, so
//! every path, failures included, is unit-tested with doubles (`tests.rs`).
//!
//! What it guarantees:
//! - everything that can fail is checked in preflight, before any quiescer or freeze;
//! - every quiescer whose `prepare` started gets `resume`, in reverse order, on every path;
//! - the request is sent once and bounded by `max_freeze` (less a margin, so the agent thaws
//!   before its guard has to); a guard that thaws or dies ends the window at once.

pub mod ports;
#[cfg(test)]
pub(crate) mod tests;

pub use freezeframe_contract::report::{
    ms, GroupReport, Phase, PhaseTiming, QuiescerReport, Report, Status,
};

use crate::errors::error_chain;
use ports::{
    Barrier, BarrierError, BarrierPoint, Consistency, FilesystemsError, ProviderError, Filesystems, FreezeOutcome, GuardEvent, Labels, MarkerRecord,
    OwnedNames, ProbeMoment, QuiescePolicy, Quiescer, Registration, SkipReason, Skipped, SnapshotNamer,
    SnapshotProvider, Target,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Told of every phase as it starts and ends (logging, progress, sd_notify).
pub trait Observer: Send + Sync {
    /// A phase began.
    fn phase_started(&self, _phase: Phase) {}
    /// A phase ended, after `elapsed`, well or not.
    fn phase_finished(&self, _phase: Phase, _elapsed: Duration, _ok: bool) {}
}

/// An observer that ignores everything (a dry run's preflight, the tests').
pub struct NoObserver;
impl Observer for NoObserver {}

/// What the caller asks of one run: the snapshot's name, the bounds, the policies.
#[derive(Debug, Clone)]
pub struct SnapshotSpec {
    /// The snapshot's name, or the template it is rendered from.
    pub name: Arc<dyn SnapshotNamer>,
    /// No filesystem stays frozen longer than this.
    pub max_freeze: Duration,
    /// Wait for the provider to report the snapshot complete.
    pub wait: bool,
    /// What a failed prepare does.
    pub on_quiesce_failure: QuiescePolicy,
    /// Delete older snapshots after this one completed.
    pub retention: Option<Retention>,
    /// Applications found running that no quiescer handles, each with why: their data is only
    /// crash-consistent, so the snapshot cannot claim `application` consistency.
    pub unquiesced: Vec<String>,
}

/// Which older snapshots to delete once a new one completed: all but the newest `keep_last`
/// of those named as this machine names its snapshots.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How many to keep; 0 keeps all.
    pub keep_last: usize,
    /// Which names this machine made.
    pub ours: Arc<dyn OwnedNames>,
}

const INTERRUPTED: &str = "interrupted by a signal";

/// The part of `max_freeze` kept back so the agent thaws on its own before its guard does.
pub(crate) fn deadline_margin(max_freeze: Duration) -> Duration {
    (max_freeze / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Set when the run is asked to stop (SIGINT, SIGTERM, a group's coordinator aborting or
/// going away): it winds down through thaw and resume instead of being dropped half-way, and
/// the report says why.
#[derive(Clone)]
pub struct Interrupt(tokio::sync::watch::Receiver<Option<String>>);

/// Triggers an [`Interrupt`]; the first reason given is the one reported.
#[derive(Clone)]
pub struct Interrupter(tokio::sync::watch::Sender<Option<String>>);

impl Interrupter {
    /// A signal asked the run to stop.
    pub fn signal(&self) {
        self.stop(INTERRUPTED);
    }

    /// Stops the run, saying why (the report's error).
    pub fn stop(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.0.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
    }
}

impl Interrupt {
    /// An interrupt and what triggers it.
    pub fn new() -> (Interrupter, Interrupt) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (Interrupter(tx), Interrupt(rx))
    }

    /// An interrupt that never comes (a dry run's preflight, the tests').
    pub fn never() -> Interrupt {
        Interrupt::new().1
    }

    fn requested(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Why the run was stopped.
    fn reason(&self) -> String {
        self.0.borrow().clone().unwrap_or_else(|| INTERRUPTED.to_string())
    }

    /// Waits for the interrupt; returns its reason.
    async fn wait(&mut self) -> String {
        while !self.requested() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        self.reason()
    }
}

/// One snapshot transaction.
pub struct Transaction<'a> {
    /// The filesystems to freeze.
    pub filesystems: &'a mut dyn Filesystems,
    /// Who takes the snapshot.
    pub provider: &'a mut dyn SnapshotProvider,
    /// The applications to quiesce, in prepare order.
    pub quiescers: Vec<Box<dyn Quiescer>>,
    /// Told of every phase.
    pub observer: &'a dyn Observer,
    /// What the caller asks.
    pub spec: SnapshotSpec,
    /// Mounts the plan skipped, for the report.
    pub skipped: Vec<Skipped>,
    /// A signal to wind down.
    pub interrupt: Interrupt,
    /// For a member of a consistency group: where it waits for the group.
    pub barrier: Option<&'a mut dyn Barrier>,
}

/// Why the window closed without a registration.
enum RequestFailure {
    Interrupted(String),
    Provider(String),
    Deadline,
    Guard(GuardEvent),
    /// The group did not reach its commit: nothing was requested.
    NotCommitted(String),
}

impl RequestFailure {
    /// The report's error: what happened, and what it means for a snapshot made anyway.
    fn explain(self, max_freeze: Duration) -> String {
        let max = humantime::format_duration(max_freeze);
        match self {
            RequestFailure::Interrupted(reason) => format!(
                "{reason} while frozen; the request was abandoned, so a snapshot the \
                 provider may still create from it is not consistent"
            ),
            RequestFailure::NotCommitted(why) => {
                format!("the group did not commit: {why}; the filesystems were thawed and no snapshot was requested")
            }
            RequestFailure::Provider(e) => format!("the snapshot request failed: {e}"),
            RequestFailure::Deadline => format!(
                "the snapshot request did not register within max_freeze ({max}): the filesystems \
                 were thawed at the deadline, so a snapshot the provider may still create from \
                 this request is not consistent; raise `freeze.max_freeze` or check the provider"
            ),
            RequestFailure::Guard(GuardEvent::DeadlineThawed) => format!(
                "the thaw guard ended the freeze at max_freeze ({max}) before the snapshot \
                 registered; a snapshot the provider may still create is not consistent"
            ),
            RequestFailure::Guard(GuardEvent::Died) => {
                "the thaw guard process died while frozen; the agent thawed at once and abandoned \
                 the request, so a snapshot the provider may still create is not consistent"
                    .to_string()
            }
        }
    }
}

/// A phase that ended the run before the window: what failed, and why.
struct Stop {
    phase: Phase,
    message: String,
}

impl Stop {
    fn at(phase: Phase, message: impl Into<String>) -> Stop {
        Stop {
            phase,
            message: message.into(),
        }
    }
}

/// Why a step before the window stopped the run, as the report says it.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// A signal or an abort, with its reason.
    #[error("{0}")]
    Interrupted(String),
    /// The filesystems could not be flushed.
    #[error("{}", error_chain(.0))]
    Filesystems(FilesystemsError),
    /// The provider's last set-up before the window failed.
    #[error("{provider} provider: {}", error_chain(.error))]
    Provider { provider: String, error: ProviderError },
    /// A group member's coordinator did not say go on.
    #[error(transparent)]
    Barrier(#[from] BarrierError),
}

/// What the frozen window came to.
struct Window {
    /// The consistency the snapshot has if it registered before any thaw.
    expected: Consistency,
    /// Set if the guard acted on its own before the thaw.
    guard_event: Option<GuardEvent>,
    registered: Result<Registration, RequestFailure>,
}

/// Keeps the report and phase timings as the run goes.
struct Recorder<'o> {
    report: Report,
    observer: &'o dyn Observer,
    current: Option<(Phase, Instant)>,
    started: Instant,
}

impl Recorder<'_> {
    fn enter(&mut self, phase: Phase) {
        self.leave(true);
        self.observer.phase_started(phase);
        self.current = Some((phase, Instant::now()));
    }

    fn leave(&mut self, ok: bool) {
        if let Some((phase, at)) = self.current.take() {
            let elapsed = at.elapsed();
            self.observer.phase_finished(phase, elapsed, ok);
            self.report.phases.push(PhaseTiming {
                phase,
                ms: ms(elapsed),
            });
            let slot = match phase {
                Phase::Quiesce => &mut self.report.quiesce_ms,
                Phase::Sync => &mut self.report.sync_ms,
                Phase::Request => &mut self.report.request_ms,
                Phase::Resume => &mut self.report.resume_ms,
                _ => return,
            };
            *slot += ms(elapsed);
        }
    }

    /// The group part of the report (set up by the run for a group's member).
    fn group_mut(&mut self) -> &mut GroupReport {
        self.report.group.get_or_insert_with(GroupReport::default)
    }

    fn fail(&mut self, phase: Phase, error: String) {
        self.report.status = Status::Failed;
        if self.report.error.is_none() {
            self.report.failed_phase = Some(phase);
            self.report.error = Some(error);
        } else {
            self.report.warnings.push(error);
        }
    }

    fn finish(mut self, provider: &dyn SnapshotProvider) -> Report {
        let usage = provider.usage();
        self.report.provider_calls = usage.calls;
        self.report.provider_budget = usage.budget;
        let ok = self.report.status == Status::Succeeded;
        self.leave(ok);
        self.report.total_ms = ms(self.started.elapsed());
        self.report
    }
}

/// Why preflight refused to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What failed, and what to do about it.
    pub message: String,
    /// The machine's set-up is at fault (see [`Report::setup_error`]).
    pub setup: bool,
}

impl Refusal {
    fn setup(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            setup: true,
        }
    }

    fn failure(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            setup: false,
        }
    }
}

impl Transaction<'_> {
    /// Runs the transaction to the end and reports. Never panics on a failed step; a report
    /// with `status: failed` says which phase failed and why.
    pub async fn run(mut self) -> Report {
        let mut rec = Recorder {
            report: self.first_report(),
            observer: self.observer,
            current: None,
            started: Instant::now(),
        };
        rec.enter(Phase::Preflight);
        match self.preflight().await {
            Ok(warnings) => rec.report.warnings.extend(warnings),
            Err(refusal) => {
                rec.fail(Phase::Preflight, refusal.message);
                rec.report.setup_error = refusal.setup;
                return rec.finish(self.provider);
            }
        }
        // From here on, every quiescer whose prepare started is resumed, on every path.
        let mut started = 0;
        match self.through_the_window(&mut rec, &mut started).await {
            Err(Stop { phase, message }) => {
                rec.fail(phase, message);
                self.resume(&mut rec, started).await;
            }
            Ok(window) => {
                rec.enter(Phase::Resume);
                self.resume(&mut rec, started).await;
                let completed = match self.settle(&mut rec, window).await {
                    Some(registration) => self.wait(&mut rec, &registration).await,
                    None => false,
                };
                self.prune(&mut rec, completed).await;
            }
        }
        if let Some(barrier) = self.barrier.as_deref() {
            barrier.note(&mut rec.report);
        }
        rec.finish(self.provider)
    }

    /// Runs preflight alone, for a dry run: everything a run checks before it quiesces or
    /// freezes anything (the filesystems, the provider and its API, the quiescers), and nothing
    /// after. The quiescers' warnings, or why a run would stop there.
    pub async fn preflight_only(mut self) -> Result<Vec<String>, Refusal> {
        self.preflight().await
    }

    /// The report before anything ran: every quiescer listed, nothing prepared.
    fn first_report(&mut self) -> Report {
        let mut report = Report::new(
            self.spec.name.render(self.planned_consistency()),
            self.provider.name().to_string(),
        );
        report.warnings = self
            .spec
            .unquiesced
            .iter()
            .map(|u| format!("not quiesced: {u}"))
            .collect();
        report.filesystems.skipped = std::mem::take(&mut self.skipped);
        report.group = self.barrier.as_ref().map(|b| GroupReport {
            id: b.group().to_string(),
            ..GroupReport::default()
        });
        report.quiescers = self
            .quiescers
            .iter()
            .map(|q| QuiescerReport {
                name: q.name().to_string(),
                prepared: false,
                resumed: false,
                details: None,
                log_position: None,
                error: None,
            })
            .collect();
        report
    }

    /// Quiesce, sync, freeze, request, thaw. A failure before the freeze stops here; once
    /// frozen, the run always reaches the thaw, and what the request did is in the window.
    async fn through_the_window(
        &mut self,
        rec: &mut Recorder<'_>,
        started: &mut usize,
    ) -> Result<Window, Stop> {
        rec.enter(Phase::Quiesce);
        let all_prepared = self.quiesce(rec, started).await?;
        let mut expected = if !self.quiescers.is_empty() && all_prepared && self.spec.unquiesced.is_empty() {
            Consistency::Application
        } else {
            Consistency::Filesystem
        };
        // Claimed no higher than the provider knows the snapshot can be: the name, the probe's
        // markers and the report all say the same.
        if let Some(limit) = self.provider.claim_limit() {
            if expected.capped(limit.at_most) != expected {
                expected = expected.capped(limit.at_most);
                rec.report.warnings.push(limit.why);
            }
        }
        let name = self.spec.name.render(expected);
        rec.report.snapshot_name = name.clone();
        rec.enter(Phase::Sync);
        // The probe's `before` marker is flushed with the rest: every image of this snapshot
        // holds it.
        let record = self.marker_record(expected);
        let unmarked = self.filesystems.mark(&name, ProbeMoment::Before, &record);
        rec.report.warnings.extend(unmarked);
        self.sync()
            .await
            .map_err(|e| Stop::at(Phase::Sync, e.to_string()))?;
        if let Some(barrier) = self.barrier.as_deref_mut() {
            barrier.arrived(BarrierPoint::Synced);
            rec.enter(Phase::Ready);
            let waited = Instant::now();
            self.ready()
                .await
                .map_err(|e| Stop::at(Phase::Ready, e.to_string()))?;
            rec.group_mut().ready_ms = ms(waited.elapsed());
        }
        rec.enter(Phase::Freeze);
        let outcome = self.freeze(rec)?;
        let frozen_at = Instant::now();
        // The guard thaws at max_freeze from its arming; the agent gives up a margin before.
        let deadline = outcome.guard_armed_at.unwrap_or(frozen_at) + self.spec.max_freeze
            - deadline_margin(self.spec.max_freeze);
        let mut held = Ok(());
        if let Some(barrier) = self.barrier.as_deref_mut() {
            barrier.arrived(BarrierPoint::Frozen);
            rec.enter(Phase::Hold);
            held = self.hold(deadline).await;
            rec.group_mut().held_ms = ms(frozen_at.elapsed());
        }
        let committed_at = Instant::now();
        let registered = match held {
            Ok(()) => {
                rec.enter(Phase::Request);
                let budget = deadline.saturating_duration_since(Instant::now());
                self.request(&name, &outcome.frozen, budget).await
            }
            Err(failure) => Err(failure),
        };
        if self.barrier.is_some() && registered.is_ok() {
            rec.group_mut().commit_to_thaw_ms = Some(ms(committed_at.elapsed()));
        }
        rec.enter(Phase::Thaw);
        let thaw = self.filesystems.thaw();
        rec.report.guard_event = thaw.guard_event;
        rec.report.frozen_ms = ms(thaw.frozen_for);
        rec.report.freezing_ms = ms(outcome.freezing);
        rec.report.thawing_ms = ms(thaw.thawing);
        if !thaw.errors.is_empty() {
            rec.fail(
                Phase::Thaw,
                format!(
                    "could not thaw {} (the thaw guard retries at once; check with `freezeframe-agent thaw`)",
                    thaw.errors.join(", ")
                ),
            );
        } else {
            // Only an image read after this point holds the `after` marker.
            let record = self.marker_record(expected);
            let unmarked = self.filesystems.mark(&name, ProbeMoment::After, &record);
            rec.report.warnings.extend(unmarked);
        }
        Ok(Window {
            expected,
            guard_event: thaw.guard_event,
            registered,
        })
    }

    /// What the probe's markers record of this run: the claim, and each quiesced database's
    /// log position and endpoint.
    fn marker_record(&self, consistency: Consistency) -> MarkerRecord {
        MarkerRecord {
            consistency,
            log_positions: self.quiescers.iter().filter_map(|q| q.log_position()).collect(),
            databases: self.quiescers.iter().filter_map(|q| q.endpoint()).collect(),
        }
    }

    /// Prepares each quiescer in order, counting in `started` those whose prepare began.
    /// Returns whether every one prepared; a failure under `abort` (or a signal) stops the run.
    async fn quiesce(&mut self, rec: &mut Recorder<'_>, started: &mut usize) -> Result<bool, Stop> {
        let mut all_prepared = true;
        for i in 0..self.quiescers.len() {
            if self.interrupt.requested() {
                return Err(Stop::at(Phase::Quiesce, self.interrupt.reason()));
            }
            *started = i + 1;
            let q = &mut self.quiescers[i];
            let timeout = q.prepare_timeout();
            // A signal does not wait for a slow prepare: it is dropped (a hook is killed) and,
            // having started, resumed with the others.
            let result = tokio::select! {
                biased;
                reason = self.interrupt.wait() => return Err(Stop::at(Phase::Quiesce, reason)),
                result = tokio::time::timeout(timeout, q.prepare()) => match result {
                    Ok(r) => r.map_err(|e| error_chain(&e)),
                    Err(_) => Err(format!(
                        "did not finish preparing within {}",
                        humantime::format_duration(timeout)
                    )),
                },
            };
            let q = &mut self.quiescers[i];
            match result {
                Ok(()) => {
                    rec.report.quiescers[i].prepared = true;
                    rec.report.quiescers[i].details = q.details();
                    rec.report.quiescers[i].log_position = q.log_position();
                }
                Err(e) => {
                    let message = format!("quiescer {} failed to prepare: {e}", q.name());
                    rec.report.quiescers[i].error = Some(e);
                    all_prepared = false;
                    match self.spec.on_quiesce_failure {
                        QuiescePolicy::Abort => return Err(Stop::at(Phase::Quiesce, message)),
                        QuiescePolicy::Continue => rec.report.warnings.push(message),
                    }
                }
            }
        }
        Ok(all_prepared)
    }

    /// Flushes the filesystems, then has the provider make sure its request needs no set-up:
    /// the last calls outside the window.
    async fn sync(&mut self) -> Result<(), StepError> {
        self.interrupted()?;
        self.filesystems.sync().await.map_err(StepError::Filesystems)?;
        self.provider.ready().await.map_err(|error| StepError::Provider {
            provider: self.provider.name().to_string(),
            error,
        })
    }

    /// Freezes, and records what was frozen and what answered EOPNOTSUPP.
    fn freeze(&mut self, rec: &mut Recorder<'_>) -> Result<FreezeOutcome, Stop> {
        let stop = |message: String| Stop::at(Phase::Freeze, message);
        self.interrupted().map_err(|e| stop(e.to_string()))?;
        let outcome = self
            .filesystems
            .freeze(self.spec.max_freeze)
            .map_err(|e| stop(error_chain(&e)))?;
        if outcome.frozen.is_empty() {
            // Every target answered EOPNOTSUPP: nothing would make the snapshot consistent.
            return Err(stop(
                "no filesystem could be frozen (each answered EOPNOTSUPP); nothing was snapshotted".into(),
            ));
        }
        for t in &outcome.not_supported {
            rec.report.filesystems.skipped.push(Skipped {
                mountpoint: t.mountpoint.clone(),
                fstype: t.fstype.clone(),
                reason: SkipReason::FreezeNotSupported,
            });
        }
        rec.report.filesystems.frozen = outcome.frozen.clone();
        Ok(outcome)
    }

    /// A group member, quiesced and flushed: waits for the coordinator's word to freeze. Not
    /// frozen yet, so only an abort (the interrupt) ends the wait early; the coordinator bounds
    /// it, and a coordinator that goes away aborts it.
    async fn ready(&mut self) -> Result<(), StepError> {
        let Some(barrier) = self.barrier.as_deref_mut() else {
            return Ok(());
        };
        tokio::select! {
            biased;
            reason = self.interrupt.wait() => Err(StepError::Interrupted(reason)),
            released = barrier.released(BarrierPoint::Synced) => Ok(released?),
        }
    }

    /// A group member, frozen: waits for the coordinator's word to request, raced like the
    /// request itself against the deadline, the guard and an abort.
    async fn hold(&mut self, deadline: Instant) -> Result<(), RequestFailure> {
        let Some(barrier) = self.barrier.as_deref_mut() else {
            return Ok(());
        };
        let max = humantime::format_duration(self.spec.max_freeze);
        tokio::select! {
            biased;
            event = self.filesystems.guard_tripped() => Err(RequestFailure::NotCommitted(format!(
                "the thaw guard ended the freeze ({event:?}) before the coordinator's commit"
            ))),
            reason = self.interrupt.wait() => Err(RequestFailure::NotCommitted(reason)),
            () = tokio::time::sleep_until(deadline.into()) => Err(RequestFailure::NotCommitted(format!(
                "the coordinator's commit did not come within max_freeze ({max})"
            ))),
            released = barrier.released(BarrierPoint::Frozen) => {
                released.map_err(|e| RequestFailure::NotCommitted(e.to_string()))
            }
        }
    }

    /// Asks for the snapshot, inside the window: raced against the deadline, the guard and
    /// signals, whichever comes first.
    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        budget: Duration,
    ) -> Result<Registration, RequestFailure> {
        let max_freeze = self.spec.max_freeze;
        tokio::select! {
            biased;
            event = self.filesystems.guard_tripped() => Err(RequestFailure::Guard(event)),
            reason = self.interrupt.wait() => Err(RequestFailure::Interrupted(reason)),
            result = tokio::time::timeout(budget, self.provider.request(name, frozen, max_freeze)) => {
                match result {
                    Ok(Ok(registration)) => Ok(registration),
                    Ok(Err(e)) => Err(RequestFailure::Provider(error_chain(&e))),
                    Err(_) => Err(RequestFailure::Deadline),
                }
            }
        }
    }

    /// After the thaw and the resumes: what the window's request came to. A registration
    /// gets its consistency; a failure its reason, and the provider is asked whether a
    /// snapshot came of it anyway.
    async fn settle(&mut self, rec: &mut Recorder<'_>, window: Window) -> Option<Registration> {
        match window.registered {
            Ok(registration) => {
                rec.report.action_id = Some(registration.action_id.clone());
                rec.report.volume_snapshots = registration.volume_snapshots.clone();
                rec.report.location = registration.location.clone();
                rec.report.consistency = Some(match window.guard_event {
                    Some(event) => {
                        rec.report.warnings.push(format!(
                            "the snapshot registered only after the thaw guard ended the freeze ({event:?}): \
                             it is crash-consistent"
                        ));
                        Consistency::Crash
                    }
                    None => window.expected,
                });
                Some(registration)
            }
            Err(failure @ RequestFailure::NotCommitted(_)) => {
                rec.fail(Phase::Hold, failure.explain(self.spec.max_freeze));
                None
            }
            Err(failure) => {
                if !matches!(failure, RequestFailure::Provider(_)) {
                    rec.report.consistency = Some(Consistency::Crash);
                }
                rec.fail(Phase::Request, failure.explain(self.spec.max_freeze));
                if let Some(found) = self.provider.reconcile().await {
                    rec.report.action_id = found.action_id;
                    rec.report.warnings.push(found.note);
                }
                None
            }
        }
    }

    /// With `wait`: until the provider reports the snapshot complete. Returns whether it did.
    async fn wait(&mut self, rec: &mut Recorder<'_>, registration: &Registration) -> bool {
        if !self.spec.wait {
            return false;
        }
        rec.enter(Phase::Wait);
        match self.provider.wait_completed(registration).await {
            Ok(done) => {
                if let Some(consistency) = rec.report.consistency {
                    let labels = Labels {
                        consistency,
                        group: rec.report.group.as_ref().map(|g| g.id.clone()),
                    };
                    if let Err(e) = self.provider.label(registration, &done, &labels).await {
                        rec.report.warnings.push(format!(
                            "the snapshot is complete, but what the run achieved could not be recorded on it: {}",
                            error_chain(&e)
                        ));
                    }
                }
                rec.report.snapshot_id = done.snapshot_id;
                rec.report.snapshot_size_bytes = done.size_bytes;
                true
            }
            Err(e) => {
                rec.fail(
                    Phase::Wait,
                    format!("the snapshot did not complete: {}", error_chain(&e)),
                );
                false
            }
        }
    }

    /// Retention, once a new snapshot completed and the run succeeded.
    async fn prune(&mut self, rec: &mut Recorder<'_>, completed: bool) {
        let Some(retention) = self.spec.retention.clone().filter(|r| r.keep_last > 0) else {
            return;
        };
        if completed && rec.report.status == Status::Succeeded {
            rec.enter(Phase::Prune);
            match self
                .provider
                .prune(retention.keep_last, retention.ours.as_ref(), false)
                .await
            {
                Ok(retained) => {
                    rec.report.pruned = retained.pruned;
                    rec.report.snapshots_kept = Some(retained.kept as u64);
                }
                Err(e) => rec.fail(Phase::Prune, format!("retention failed: {}", error_chain(&e))),
            }
        } else if !self.spec.wait {
            rec.report.warnings.push(
                "retention (`retention.keep_last`) runs only once a new snapshot has completed: \
                 snapshot with --wait"
                    .into(),
            );
        }
    }

    /// The consistency a run aims at before it starts: what names checked in preflight use.
    fn planned_consistency(&self) -> Consistency {
        if self.quiescers.is_empty() || !self.spec.unquiesced.is_empty() {
            Consistency::Filesystem
        } else {
            Consistency::Application
        }
    }

    fn interrupted(&self) -> Result<(), StepError> {
        if self.interrupt.requested() {
            Err(StepError::Interrupted(self.interrupt.reason()))
        } else {
            Ok(())
        }
    }

    /// Checks everything before anything changes; returns the quiescers' warnings.
    async fn preflight(&mut self) -> Result<Vec<String>, Refusal> {
        if self.filesystems.targets().is_empty() {
            return Err(Refusal::setup(
                "there is no filesystem to freeze; check `freeze.mountpoints` and `freeze.exclude` \
                 (`freezeframe-agent plan` lists what was skipped and why)",
            ));
        }
        self.filesystems
            .preflight()
            .map_err(|e| Refusal::failure(error_chain(&e)))?;
        let targets = self.filesystems.targets().to_vec();
        self.provider
            .preflight(&self.spec.name.render(self.planned_consistency()), &targets)
            .await
            .map_err(|e| Refusal {
                message: format!("{} provider: {}", self.provider.name(), error_chain(&e)),
                setup: e.is_setup(),
            })?;
        let mut warnings = Vec::new();
        for q in &mut self.quiescers {
            q.check(&targets)
                .await
                .map_err(|e| Refusal::failure(format!("quiescer {}: {}", q.name(), error_chain(&e))))?;
            warnings.extend(q.warnings());
        }
        Ok(warnings)
    }

    /// Resumes `quiescers[..started]` in reverse order, each bounded by its timeout.
    async fn resume(&mut self, rec: &mut Recorder<'_>, started: usize) {
        for i in (0..started).rev() {
            let q = &mut self.quiescers[i];
            let result = match tokio::time::timeout(q.resume_timeout(), q.resume()).await {
                Ok(r) => r.map_err(|e| error_chain(&e)),
                Err(_) => Err(format!(
                    "did not finish resuming within {}",
                    humantime::format_duration(q.resume_timeout())
                )),
            };
            match result {
                Ok(()) => rec.report.quiescers[i].resumed = true,
                Err(e) => {
                    let message = format!("quiescer {} failed to resume: {e}", q.name());
                    rec.report.quiescers[i].error.get_or_insert(e);
                    rec.fail(Phase::Resume, message);
                }
            }
        }
    }
}
