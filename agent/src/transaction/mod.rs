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
mod report;
#[cfg(test)]
mod tests;

pub use report::{error_chain, ms, FilesystemsReport, Phase, PhaseTiming, QuiescerReport, Report, Status};

use crate::naming::{OwnNames, SnapshotName};
use ports::{
    Consistency, Filesystems, GuardEvent, QuiescePolicy, Quiescer, Registration, SkipReason, Skipped,
    SnapshotProvider,
};
use std::time::{Duration, Instant};

/// Told of every phase as it starts and ends (logging, progress, sd_notify).
pub trait Observer: Send + Sync {
    fn phase_started(&self, _phase: Phase) {}
    fn phase_finished(&self, _phase: Phase, _elapsed: Duration, _ok: bool) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// What the caller asks of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: SnapshotName,
    pub max_freeze: Duration,
    /// Wait for the provider to report the snapshot complete.
    pub wait: bool,
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
    pub keep_last: usize,
    pub ours: OwnNames,
}

const INTERRUPTED: &str = "interrupted by a signal";

/// The part of `max_freeze` kept back so the agent thaws on its own before its guard does.
pub fn deadline_margin(max_freeze: Duration) -> Duration {
    (max_freeze / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Set when the user asks to stop (SIGINT, SIGTERM): the run winds down through thaw and resume
/// instead of being dropped half-way.
#[derive(Clone)]
pub struct Interrupt(tokio::sync::watch::Receiver<bool>);

impl Interrupt {
    /// An interrupt and the switch that triggers it (`send(true)`).
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Interrupt) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Interrupt(rx))
    }

    /// An interrupt that never comes.
    pub fn never() -> Interrupt {
        Interrupt::new().1
    }

    fn requested(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(&mut self) {
        while !self.requested() {
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// One snapshot transaction.
pub struct Transaction<'a> {
    pub filesystems: &'a mut dyn Filesystems,
    pub provider: &'a mut dyn SnapshotProvider,
    pub quiescers: Vec<Box<dyn Quiescer>>,
    pub observer: &'a dyn Observer,
    pub options: Options,
    /// Mounts the plan skipped, for the report.
    pub skipped: Vec<Skipped>,
    pub interrupt: Interrupt,
}

/// Why the window closed without a registration.
enum RequestFailure {
    Interrupted,
    Provider(String),
    Deadline,
    Guard(GuardEvent),
}

/// Keeps the report and phase timings as the run goes.
struct Run<'o> {
    report: Report,
    observer: &'o dyn Observer,
    current: Option<(Phase, Instant)>,
    started: Instant,
}

impl Run<'_> {
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

    fn fail(&mut self, phase: Phase, error: String) {
        self.report.status = Status::Failed;
        if self.report.error.is_none() {
            self.report.failed_phase = Some(phase);
            self.report.error = Some(error);
        } else {
            self.report.warnings.push(error);
        }
    }

    fn finish(mut self) -> Report {
        let ok = self.report.status == Status::Succeeded;
        self.leave(ok);
        self.report.total_ms = ms(self.started.elapsed());
        self.report
    }
}

/// Why preflight refused to go on.
struct Refusal {
    message: String,
    /// The machine's set-up is at fault (see [`Report::setup_error`]).
    setup: bool,
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
        let mut run = Run {
            report: Report {
                status: Status::Succeeded,
                snapshot_name: self.options.name.render(self.planned_consistency()),
                provider: self.provider.name().to_string(),
                action_id: None,
                snapshot_id: None,
                snapshot_size_bytes: None,
                pruned: Vec::new(),
                volume_snapshots: Vec::new(),
                consistency: None,
                failed_phase: None,
                error: None,
                setup_error: false,
                warnings: self
                    .options
                    .unquiesced
                    .iter()
                    .map(|u| format!("not quiesced: {u}"))
                    .collect(),
                filesystems: FilesystemsReport {
                    frozen: Vec::new(),
                    skipped: std::mem::take(&mut self.skipped),
                },
                quiescers: self
                    .quiescers
                    .iter()
                    .map(|q| QuiescerReport {
                        name: q.name().to_string(),
                        prepared: false,
                        resumed: false,
                        details: None,
                        error: None,
                    })
                    .collect(),
                quiesce_ms: 0.0,
                sync_ms: 0.0,
                frozen_ms: 0.0,
                freezing_ms: 0.0,
                request_ms: 0.0,
                thawing_ms: 0.0,
                resume_ms: 0.0,
                total_ms: 0.0,
                phases: Vec::new(),
            },
            observer: self.observer,
            current: None,
            started: Instant::now(),
        };

        run.enter(Phase::Preflight);
        match self.preflight().await {
            Ok(warnings) => run.report.warnings.extend(warnings),
            Err(refusal) => {
                run.fail(Phase::Preflight, refusal.message);
                run.report.setup_error = refusal.setup;
                return run.finish();
            }
        }

        run.enter(Phase::Quiesce);
        let mut started = 0;
        let mut all_prepared = true;
        for i in 0..self.quiescers.len() {
            if self.interrupt.requested() {
                run.fail(Phase::Quiesce, INTERRUPTED.to_string());
                self.resume(&mut run, started).await;
                return run.finish();
            }
            started = i + 1;
            let q = &mut self.quiescers[i];
            let timeout = q.prepare_timeout();
            // A signal does not wait for a slow prepare: it is dropped (a hook is killed) and,
            // having started, resumed with the others.
            let result = tokio::select! {
                biased;
                () = self.interrupt.wait() => {
                    run.fail(Phase::Quiesce, INTERRUPTED.to_string());
                    self.resume(&mut run, started).await;
                    return run.finish();
                }
                result = tokio::time::timeout(timeout, q.prepare()) => match result {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!(
                        "did not finish preparing within {}",
                        humantime::format_duration(timeout)
                    )),
                },
            };
            let q = &mut self.quiescers[i];
            match result {
                Ok(()) => {
                    run.report.quiescers[i].prepared = true;
                    run.report.quiescers[i].details = q.details();
                }
                Err(e) => {
                    let message = format!("quiescer {} failed to prepare: {e}", q.name());
                    run.report.quiescers[i].error = Some(e);
                    all_prepared = false;
                    match self.options.on_quiesce_failure {
                        QuiescePolicy::Abort => {
                            run.fail(Phase::Quiesce, message);
                            self.resume(&mut run, started).await;
                            return run.finish();
                        }
                        QuiescePolicy::Continue => run.report.warnings.push(message),
                    }
                }
            }
        }

        run.enter(Phase::Sync);
        let synced = match self.interrupted() {
            Ok(()) => self.filesystems.sync().await.map_err(|e| error_chain(&e)),
            Err(e) => Err(e),
        };
        // Last call outside the window: the provider makes sure its request needs no set-up.
        let synced = match synced {
            Ok(()) => self
                .provider
                .ready()
                .await
                .map_err(|e| format!("{} provider: {}", self.provider.name(), error_chain(&e))),
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            run.fail(Phase::Sync, e);
            self.resume(&mut run, started).await;
            return run.finish();
        }

        run.enter(Phase::Freeze);
        let frozen = match self.interrupted() {
            Ok(()) => self
                .filesystems
                .freeze(self.options.max_freeze)
                .map_err(|e| error_chain(&e)),
            Err(e) => Err(e),
        };
        let outcome = match frozen {
            Ok(outcome) => outcome,
            Err(e) => {
                run.fail(Phase::Freeze, e);
                self.resume(&mut run, started).await;
                return run.finish();
            }
        };
        if outcome.frozen.is_empty() {
            // Every target answered EOPNOTSUPP: nothing would make the snapshot consistent.
            run.fail(
                Phase::Freeze,
                "no filesystem could be frozen (each answered EOPNOTSUPP); nothing was snapshotted".into(),
            );
            self.resume(&mut run, started).await;
            return run.finish();
        }
        let frozen_at = Instant::now();
        for t in &outcome.not_supported {
            run.report.filesystems.skipped.push(Skipped {
                mountpoint: t.mountpoint.clone(),
                fstype: t.fstype.clone(),
                reason: SkipReason::FreezeNotSupported,
            });
        }
        run.report.filesystems.frozen = outcome.frozen.clone();

        run.enter(Phase::Request);
        let expected = if !self.quiescers.is_empty() && all_prepared && self.options.unquiesced.is_empty() {
            Consistency::Application
        } else {
            Consistency::Filesystem
        };
        let name = self.options.name.render(expected);
        run.report.snapshot_name = name.clone();
        let budget = self
            .options
            .max_freeze
            .saturating_sub(deadline_margin(self.options.max_freeze))
            .saturating_sub(outcome.guard_armed_at.unwrap_or(frozen_at).elapsed());
        let registered: Result<Registration, RequestFailure> = tokio::select! {
            biased;
            event = self.filesystems.guard_tripped() => Err(RequestFailure::Guard(event)),
            () = self.interrupt.wait() => Err(RequestFailure::Interrupted),
            result = tokio::time::timeout(budget, self.provider.request(&name, &outcome.frozen)) => {
                match result {
                    Ok(Ok(registration)) => Ok(registration),
                    Ok(Err(e)) => Err(RequestFailure::Provider(error_chain(&e))),
                    Err(_) => Err(RequestFailure::Deadline),
                }
            }
        };

        run.enter(Phase::Thaw);
        let thaw = self.filesystems.thaw();
        run.report.frozen_ms = ms(thaw.frozen_for);
        run.report.freezing_ms = ms(outcome.freezing);
        run.report.thawing_ms = ms(thaw.thawing);
        if !thaw.errors.is_empty() {
            run.fail(
                Phase::Thaw,
                format!(
                    "could not thaw {} (the thaw guard retries at once; check with `freezeframe-agent thaw`)",
                    thaw.errors.join(", ")
                ),
            );
        }

        run.enter(Phase::Resume);
        self.resume(&mut run, started).await;

        let max = humantime::format_duration(self.options.max_freeze);
        let registration = match registered {
            Ok(registration) => {
                run.report.action_id = Some(registration.action_id.clone());
                run.report.volume_snapshots = registration.volume_snapshots.clone();
                let consistency = if let Some(event) = thaw.guard_event {
                    run.report.warnings.push(format!(
                        "the snapshot registered only after the thaw guard ended the freeze ({event:?}): \
                         it is crash-consistent"
                    ));
                    Consistency::Crash
                } else if outcome.frozen.is_empty() {
                    Consistency::Crash
                } else if expected == Consistency::Application {
                    Consistency::Application
                } else {
                    Consistency::Filesystem
                };
                run.report.consistency = Some(consistency);
                Some(registration)
            }
            Err(failure) => {
                let message = match failure {
                    RequestFailure::Interrupted => {
                        run.report.consistency = Some(Consistency::Crash);
                        format!(
                            "{INTERRUPTED} while frozen; the request was abandoned, so a snapshot the \
                                 provider may still create from it is not consistent"
                        )
                    }
                    RequestFailure::Provider(e) => format!("the snapshot request failed: {e}"),
                    RequestFailure::Deadline => {
                        run.report.consistency = Some(Consistency::Crash);
                        format!(
                            "the snapshot request did not register within max_freeze ({max}): the filesystems \
                             were thawed at the deadline, so a snapshot the provider may still create from \
                             this request is not consistent; raise `freeze.max_freeze` or check the provider"
                        )
                    }
                    RequestFailure::Guard(GuardEvent::DeadlineThawed) => {
                        run.report.consistency = Some(Consistency::Crash);
                        format!(
                            "the thaw guard ended the freeze at max_freeze ({max}) before the snapshot \
                             registered; a snapshot the provider may still create is not consistent"
                        )
                    }
                    RequestFailure::Guard(GuardEvent::Died) => {
                        run.report.consistency = Some(Consistency::Crash);
                        "the thaw guard process died while frozen; the agent thawed at once and abandoned \
                         the request, so a snapshot the provider may still create is not consistent"
                            .to_string()
                    }
                };
                run.fail(Phase::Request, message);
                if let Some(found) = self.provider.reconcile().await {
                    run.report.action_id = found.action_id;
                    run.report.warnings.push(found.note);
                }
                None
            }
        };

        let mut completed = false;
        if let (true, Some(registration)) = (self.options.wait, registration) {
            run.enter(Phase::Wait);
            match self.provider.wait_completed(&registration).await {
                Ok(done) => {
                    run.report.snapshot_id = done.snapshot_id;
                    run.report.snapshot_size_bytes = done.size_bytes;
                    completed = true;
                }
                Err(e) => run.fail(
                    Phase::Wait,
                    format!("the snapshot did not complete: {}", error_chain(&e)),
                ),
            }
        }

        if let Some(retention) = self.options.retention.clone().filter(|r| r.keep_last > 0) {
            if completed && run.report.status == Status::Succeeded {
                run.enter(Phase::Prune);
                match self.provider.prune(retention.keep_last, &retention.ours).await {
                    Ok(pruned) => run.report.pruned = pruned,
                    Err(e) => run.fail(Phase::Prune, format!("retention failed: {}", error_chain(&e))),
                }
            } else if !self.options.wait {
                run.report.warnings.push(
                    "retention (`retention.keep_last`) runs only once a new snapshot has completed: \
                     snapshot with --wait"
                        .into(),
                );
            }
        }
        run.finish()
    }

    /// The consistency a run aims at before it starts: what names checked in preflight use.
    fn planned_consistency(&self) -> Consistency {
        if self.quiescers.is_empty() || !self.options.unquiesced.is_empty() {
            Consistency::Filesystem
        } else {
            Consistency::Application
        }
    }

    fn interrupted(&self) -> Result<(), String> {
        if self.interrupt.requested() {
            Err(INTERRUPTED.to_string())
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
            .preflight(&self.options.name.render(self.planned_consistency()), &targets)
            .await
            .map_err(|e| Refusal {
                message: format!("{} provider: {}", self.provider.name(), error_chain(&e)),
                setup: e.is_setup(),
            })?;
        let mut warnings = Vec::new();
        for q in &mut self.quiescers {
            q.check(&targets)
                .await
                .map_err(|e| Refusal::failure(format!("quiescer {}: {e}", q.name())))?;
            warnings.extend(q.warnings());
        }
        Ok(warnings)
    }

    /// Resumes `quiescers[..started]` in reverse order, each bounded by its timeout.
    async fn resume(&mut self, run: &mut Run<'_>, started: usize) {
        for i in (0..started).rev() {
            let q = &mut self.quiescers[i];
            let result = match tokio::time::timeout(q.resume_timeout(), q.resume()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "did not finish resuming within {}",
                    humantime::format_duration(q.resume_timeout())
                )),
            };
            match result {
                Ok(()) => run.report.quiescers[i].resumed = true,
                Err(e) => {
                    let message = format!("quiescer {} failed to resume: {e}", q.name());
                    run.report.quiescers[i].error.get_or_insert(e);
                    run.fail(Phase::Resume, message);
                }
            }
        }
    }
}
