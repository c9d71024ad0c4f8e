//! `freezeframe-agent run`: the agent as the D-Bus service `org.freezeframe.Agent1` on the
//! system bus (or the bus `DBUS_SYSTEM_BUS_ADDRESS` names). It runs one snapshot job at a time,
//! publishes each phase and the result as signals, and exits when idle (`agent.idle_exit`):
//! D-Bus activation starts it on the next call, so nothing runs between snapshots.

pub(crate) mod access;
mod group;
mod listing;

use crate::config::{ConfigError, ConfigSources, Settings};
use crate::job::{self, JobRequest};
use crate::notify::Notifier;
use crate::runtime::{RecoveredFilesystem, RecoveredResume, RuntimeDir, RuntimeError};
use crate::transaction::ports::{Barrier, BarrierPoint};
use crate::transaction::{Interrupt, Interrupter, Observer, Phase, Report, Status};
use access::Access;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use freezeframe_contract::wire::{self, Dict};
use freezeframe_contract::{AgentError, AgentStatus, BUS_NAME, OBJECT_PATH};

/// What a Snapshot or Prepare call asks for, read from its `a{sv}` options.
#[derive(Debug, Default, PartialEq)]
struct SnapshotOptions {
    request: JobRequest,
    dry_run: bool,
    /// Prepare's group id.
    group: Option<String>,
    /// Prepare's: how long the coordinator waits for the group to be prepared.
    prepare_timeout: Option<Duration>,
}

/// Which method's options: each takes its own keys.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OptionsOf {
    Snapshot,
    Prepare,
}

impl OptionsOf {
    fn keys(self) -> &'static [&'static str] {
        match self {
            OptionsOf::Snapshot => &["name (s)", "wait (b)", "dry-run (b)"],
            OptionsOf::Prepare => &["group (s)", "wait (b)", "max-freeze-ms (t)", "timeout-ms (t)"],
        }
    }
}

fn parse_options(options: &Dict, of: OptionsOf) -> Result<SnapshotOptions, AgentError> {
    let mut parsed = SnapshotOptions::default();
    for (key, value) in options {
        let wrong_type = |expected: &str| {
            AgentError::InvalidArgs(format!(
                "option `{key}` must be {expected}, not a value of type `{}`",
                value.value_signature()
            ))
        };
        if !of
            .keys()
            .iter()
            .any(|k| k.split(' ').next() == Some(key.as_str()))
        {
            return Err(AgentError::InvalidArgs(format!(
                "unknown option `{}`; the options are {}",
                key.chars().take(64).collect::<String>(),
                of.keys().join(", ")
            )));
        }
        match key.as_str() {
            "name" => {
                let name: &str = value.downcast_ref().map_err(|_| wrong_type("a string (s)"))?;
                crate::naming::check_name(name)
                    .map_err(|e| AgentError::InvalidArgs(format!("option `name`: {e}")))?;
                parsed.request.name = Some(name.to_string());
            }
            "group" => {
                let group: &str = value.downcast_ref().map_err(|_| wrong_type("a string (s)"))?;
                if !crate::naming::is_group_id(group) {
                    return Err(AgentError::InvalidArgs(format!(
                        "option `group`: `{}` is not a group id (g and 8 lowercase hexadecimal digits)",
                        group.chars().take(64).collect::<String>()
                    )));
                }
                parsed.group = Some(group.to_string());
            }
            "max-freeze-ms" | "timeout-ms" => {
                let ms: u64 = value
                    .downcast_ref()
                    .map_err(|_| wrong_type("an unsigned integer (t)"))?;
                if ms == 0 {
                    return Err(AgentError::InvalidArgs(format!("option `{key}` must be above 0")));
                }
                let ms = Some(Duration::from_millis(ms));
                if key == "timeout-ms" {
                    parsed.prepare_timeout = ms;
                } else {
                    parsed.request.max_freeze = ms;
                }
            }
            "wait" => parsed.request.wait = value.downcast_ref().map_err(|_| wrong_type("a boolean (b)"))?,
            "dry-run" => parsed.dry_run = value.downcast_ref().map_err(|_| wrong_type("a boolean (b)"))?,
            _ => unreachable!("every key listed is parsed"),
        }
    }
    if of == OptionsOf::Prepare && parsed.group.is_none() {
        return Err(AgentError::InvalidArgs(
            "option `group` is required: the group's id, as the coordinator made it".into(),
        ));
    }
    Ok(parsed)
}

/// The job running now.
struct Running {
    id: u64,
    /// Asks it to wind down.
    stop: Interrupter,
    /// For a group's member: its coordinator and barrier.
    group: Option<Arc<group::GroupSlot>>,
    /// The phase it is in.
    phase: Option<Phase>,
}

/// What the service holds between calls.
struct State {
    /// The job running now.
    running: Option<Running>,
    next_job: u64,
    last_activity: Instant,
    /// The last job's report.
    last_result: Option<Report>,
    /// Until when Prepare is refused to callers other than root: a group job ended here
    /// without a commit (see [`group::cool_down`]).
    prepare_cool_down: Option<group::CoolDown>,
}

/// ListSnapshots' kept answer, for the `[snapshot]` settings it was fetched with.
type Listings = listing::ListCache<
    crate::config::SnapshotSettings,
    Vec<freezeframe_contract::SnapshotInfo>,
    Arc<crate::transaction::ports::ProviderError>,
>;

/// The object served at [`OBJECT_PATH`].
pub(crate) struct Agent {
    config: Option<PathBuf>,
    state: Arc<Mutex<State>>,
    /// ListSnapshots' answer, kept for callers admitted by `public_read`.
    listings: Arc<Listings>,
    group: Option<u32>,
    /// Set when the service winds down: no new jobs.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Held by one claim at a time, across its probe of the transaction lock: a probe (which
    /// takes the lock for a moment) then never meets a job of this agent's own taking it.
    claiming: Arc<tokio::sync::Mutex<()>>,
}

/// Who holds the transaction lock, when another holds it (`Some(pid)`, the pid when known): a
/// probe, the lock let go at once, on the blocking pool (a mkdir and a lock file opened and
/// written in the runtime directory).
async fn lock_holder(runtime_dir: &std::path::Path) -> Option<Option<u32>> {
    let dir = runtime_dir.to_path_buf();
    crate::blocking::run(
        move || match RuntimeDir::open(&dir).and_then(|d| d.lock().map(drop)) {
            Err(RuntimeError::Busy { pid }) => Some(pid),
            _ => None,
        },
    )
    .await
}

impl Agent {
    /// A dry run (`snapshot` with `dry-run`): answers its job id at once, then JobFinished with
    /// the plan and preflight's verdict (`contract::DryRun`), `succeeded` when preflight
    /// passed. Nothing is claimed, frozen or recorded.
    fn dry_run(&self, settings: Settings, request: JobRequest, emitter: SignalEmitter<'static>) -> u64 {
        let id = self.next_job_id();
        tokio::spawn(async move {
            let (passed, answer) = match job::dry_run(&settings, &request).await {
                Ok(found) => {
                    let answer = found.answer();
                    (answer.preflight.passed, wire::to_dict(&answer))
                }
                Err(e) => {
                    let report = Report::not_started(e.to_string());
                    (false, wire::to_dict(&report))
                }
            };
            let _ = Agent::job_finished(&emitter, id, passed, answer).await;
        });
        id
    }

    fn next_job_id(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.next_job += 1;
        state.next_job
    }

    /// Makes the next job the running one, unless a job runs here or another process (a
    /// one-shot `freezeframe-agent snapshot`) holds the lock.
    async fn claim_job(
        &self,
        settings: &Settings,
        group: Option<Arc<group::GroupSlot>>,
    ) -> Result<(u64, Interrupt, Interrupter), AgentError> {
        let _claiming = self.claiming.lock().await;
        let running = |state: &State| {
            state.running.as_ref().map(|running| {
                AgentError::Busy(format!(
                    "snapshot job {} is running; wait for its JobFinished signal",
                    running.id
                ))
            })
        };
        if let Some(busy) = running(&self.state.lock().unwrap()) {
            return Err(busy);
        }
        // Probed with the state unlocked (it opens files: the blocking pool's work), and only
        // while no job of this agent's runs, so the probe never holds the lock a job needs.
        let holder = lock_holder(&settings.runtime_dir).await;
        let mut state = self.state.lock().unwrap();
        if let Some(busy) = running(&state) {
            return Err(busy);
        }
        if let Some(pid) = holder {
            return Err(AgentError::Busy(format!(
                "another snapshot is in progress on this machine{}",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            )));
        }
        state.next_job += 1;
        let (stop, interrupt) = Interrupt::new();
        state.running = Some(Running {
            id: state.next_job,
            stop: stop.clone(),
            group: group.clone(),
            phase: None,
        });
        Ok((state.next_job, interrupt, stop))
    }

    /// Lets group job `job` past `point`, for the caller of its Prepare. Inside the group's
    /// window: no check of the caller with the bus (a round trip) and no configuration read;
    /// the caller was admitted at Prepare, and a bus never gives its unique name to another
    /// connection.
    fn release(&self, job: u64, header: &Header<'_>, point: BarrierPoint) -> Result<(), AgentError> {
        let (slot, _) = self.group_job(job)?;
        slot.release(header.sender().map(|s| s.as_str()), job, point)?;
        self.touch();
        Ok(())
    }

    /// The running group job `job`, for its coordinator's calls.
    fn group_job(&self, job: u64) -> Result<(Arc<group::GroupSlot>, Interrupter), AgentError> {
        let state = self.state.lock().unwrap();
        match &state.running {
            Some(Running {
                id,
                group: Some(slot),
                stop,
                ..
            }) if *id == job => Ok((slot.clone(), stop.clone())),
            _ => Err(AgentError::InvalidArgs(format!(
                "no group job {job} is running here (it finished, or it was never prepared)"
            ))),
        }
    }

    /// The configuration, read anew: files read on the blocking pool, where a hung filesystem
    /// holds up this call alone.
    async fn settings(&self) -> Result<Settings, AgentError> {
        let sources = match &self.config {
            Some(path) => ConfigSources::explicit(path),
            None => ConfigSources::system(),
        };
        crate::blocking::run(move || sources.load())
            .await
            .map_err(|e| AgentError::Failed(format!("the agent's configuration: {e}")))
    }

    /// Checks the caller and loads the settings (the configuration may have changed).
    async fn admit(
        &self,
        access: Access,
        connection: &zbus::Connection,
        header: &Header<'_>,
    ) -> Result<Settings, AgentError> {
        self.admit_as(access, connection, header)
            .await
            .map(|(settings, _)| settings)
    }

    /// As [`Agent::admit`], saying also how the caller was admitted. Only an admitted call
    /// counts as activity: a refused caller cannot keep the agent from its idle exit.
    async fn admit_as(
        &self,
        access: Access,
        connection: &zbus::Connection,
        header: &Header<'_>,
    ) -> Result<(Settings, access::Admitted), AgentError> {
        let (settings, admitted, _) = self.admit_caller(access, connection, header).await?;
        self.touch();
        Ok((settings, admitted))
    }

    /// As [`Agent::admit_as`], with the caller, and not yet counted as activity: the method
    /// checks more before it calls [`Agent::touch`].
    async fn admit_caller(
        &self,
        access: Access,
        connection: &zbus::Connection,
        header: &Header<'_>,
    ) -> Result<(Settings, access::Admitted, access::Caller), AgentError> {
        let caller = access::caller(connection, header).await?;
        let settings = self.settings().await?;
        let admitted = access::check(&caller, access, self.group, settings.service.public_read)?;
        Ok((settings, admitted, caller))
    }

    /// Checks a property reader as `Status` is checked. Without a header the value is being
    /// computed for a change signal, which the bus policy delivers to root and the group only.
    async fn admit_reader(
        &self,
        header: Option<Header<'_>>,
        connection: &zbus::Connection,
    ) -> zbus::fdo::Result<Settings> {
        match header {
            Some(header) => self
                .admit(Access::Read, connection, &header)
                .await
                .map_err(|e| match e {
                    AgentError::AccessDenied(m) => zbus::fdo::Error::AccessDenied(m),
                    other => zbus::fdo::Error::Failed(other.to_string()),
                }),
            None => self
                .settings()
                .await
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string())),
        }
    }

    /// The last run's report, typed: from the runtime directory, where every run keeps it (a
    /// one-shot `freezeframe-agent snapshot` too), else this process's own last job.
    async fn last_report(&self, settings: &Settings) -> Option<Report> {
        let runtime_dir = settings.runtime_dir.clone();
        crate::blocking::run(move || job::last_report(&runtime_dir))
            .await
            .or_else(|| self.state.lock().unwrap().last_result.clone())
    }

    fn refuse_when_stopping(&self) -> Result<(), AgentError> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AgentError::Failed(
                "the agent is shutting down; call again".into(),
            ));
        }
        Ok(())
    }

    fn touch(&self) {
        self.state.lock().unwrap().last_activity = Instant::now();
    }

    fn busy(&self) -> Option<u64> {
        self.state.lock().unwrap().running.as_ref().map(|r| r.id)
    }

    /// `Prune` and its dry run: one selection, which the dry run only does not act on.
    async fn pruned(
        &self,
        settings: &Settings,
        keep_last: u32,
        dry_run: bool,
    ) -> Result<Vec<Dict>, AgentError> {
        if keep_last == 0 {
            return Err(AgentError::InvalidArgs(
                "keep_last must be at least 1: prune never deletes every snapshot".into(),
            ));
        }
        if let Some(running) = self.busy() {
            return Err(AgentError::Busy(format!("snapshot job {running} is running")));
        }
        let pruned = job::provider(settings)
            .port()
            .prune(keep_last as usize, &job::own_names(settings), dry_run)
            .await;
        if !dry_run {
            self.listings.invalidate();
        }
        let pruned = pruned.map_err(|e| AgentError::Failed(crate::errors::error_chain(&e)))?;
        Ok(pruned.pruned.iter().map(wire::to_dict).collect())
    }

    /// `DeleteGroups` and its dry run: one selection, which the dry run only does not act on.
    async fn groups_pruned(
        &self,
        settings: &Settings,
        groups: Vec<String>,
        dry_run: bool,
    ) -> Result<Vec<Dict>, AgentError> {
        if let Some(bad) = groups.iter().find(|g| !crate::naming::is_group_id(g)) {
            return Err(AgentError::InvalidArgs(format!(
                "`{}` is not a group id (g and 8 lowercase hexadecimal digits)",
                bad.chars().take(64).collect::<String>()
            )));
        }
        if let Some(running) = self.busy() {
            return Err(AgentError::Busy(format!("snapshot job {running} is running")));
        }
        let named = crate::naming::GroupsNamed {
            template: settings.snapshot.group_name_template.clone(),
            host: crate::naming::hostname(),
            groups,
        };
        let deleted = job::provider(settings).port().prune(0, &named, dry_run).await;
        if !dry_run {
            self.listings.invalidate();
        }
        let deleted = deleted.map_err(|e| AgentError::Failed(crate::errors::error_chain(&e)))?;
        Ok(deleted.pruned.iter().map(wire::to_dict).collect())
    }
}

/// The agent's properties that change with its jobs.
#[derive(Debug, Clone, Copy)]
enum Changed {
    RunningJob,
    JobPhase,
    Frozen,
    LastResult,
}

/// Sends PropertiesChanged for `what`: a message on the bus socket, never a write to a
/// filesystem, so it may go out while frozen.
async fn announce(connection: &zbus::Connection, what: Changed) {
    let Ok(iface) = connection
        .object_server()
        .interface::<_, Agent>(OBJECT_PATH)
        .await
    else {
        return;
    };
    let agent = iface.get().await;
    let emitter = iface.signal_emitter();
    let sent = match what {
        Changed::RunningJob => agent.running_job_changed(emitter).await,
        Changed::JobPhase => agent.job_phase_changed(emitter).await,
        Changed::Frozen => agent.frozen_changed(emitter).await,
        Changed::LastResult => agent.last_result_changed(emitter).await,
    };
    if let Err(e) = sent {
        tracing::debug!("cannot announce {what:?}: {e}");
    }
}

/// One snapshot job, run as a task of its own: its phases go out as signals, its report is the
/// last result and the JobFinished signal.
struct Job {
    id: u64,
    settings: Settings,
    request: JobRequest,
    state: Arc<Mutex<State>>,
    /// Made stale when the job ends: it may have created and pruned snapshots.
    listings: Arc<Listings>,
    emitter: SignalEmitter<'static>,
    /// For a group's member: the barrier, and the watch on its coordinator (ended with the job).
    group: Option<(group::ServiceBarrier, tokio::task::JoinHandle<()>)>,
}

/// A phase as the observer saw it: the phase, whether it finished, whether it went well, and
/// how long it took in milliseconds.
type PhaseEvent = (Phase, bool, bool, f64);

impl Job {
    async fn run(mut self, interrupt: Interrupt) {
        let started = Instant::now();
        announce(self.emitter.connection(), Changed::RunningJob).await;
        let (events, received) = tokio::sync::mpsc::unbounded_channel::<PhaseEvent>();
        let forwarder = tokio::spawn(forward_phases(
            self.emitter.clone(),
            self.id,
            self.state.clone(),
            received,
        ));
        let observer = SignalObserver {
            events,
            notifier: Notifier::from_env(),
        };
        let droplet = match &self.settings.snapshot.provider {
            crate::config::ProviderSettings::DigitalOcean(d) => d.droplet_id.map(|id| id.to_string()),
            _ => None,
        };
        let group = self.group.as_ref().map(|(b, _)| b.group.clone());
        tracing::info!(
            job = self.id,
            droplet = droplet.as_deref().unwrap_or("from metadata"),
            group = group.as_deref().unwrap_or_default(),
            "snapshot job started"
        );
        let barrier = self.group.as_mut().map(|(b, _)| b as &mut dyn Barrier);
        let result = job::execute(&self.settings, &self.request, &observer, interrupt, barrier).await;
        let mut cool_down = None;
        if let Some((barrier, watcher)) = self.group.take() {
            watcher.abort();
            if !barrier.slot.committed() {
                cool_down = Some(group::CoolDown::after(started.elapsed()));
            }
        }
        if cool_down.is_some() {
            self.state.lock().unwrap().prepare_cool_down = cool_down;
        }
        drop(observer);
        let _ = forwarder.await;
        self.finish(result).await;
    }

    /// Records the report as the last result, frees the agent for the next job, and says so.
    async fn finish(self, result: Result<Report, job::JobError>) {
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                let report = Report::not_started(e.to_string());
                // A job that could not start (busy, a bad plan) is still the last result.
                if !e.is_busy() {
                    // Written and flushed: on the blocking pool.
                    let (dir, last) = (self.settings.runtime_dir.clone(), report.clone());
                    crate::blocking::run(move || job::record_last_report(&dir, &last)).await;
                }
                report
            }
        };
        let succeeded = report.status == Status::Succeeded;
        tracing::info!(
            job = self.id,
            succeeded,
            action_id = report.action_id.as_deref().unwrap_or_default(),
            "snapshot job finished"
        );
        Notifier::from_env().status("waiting for calls");
        self.listings.invalidate();
        {
            let mut state = self.state.lock().unwrap();
            state.running = None;
            state.last_activity = Instant::now();
            state.last_result = Some(report.clone());
        }
        for changed in [
            Changed::RunningJob,
            Changed::JobPhase,
            Changed::Frozen,
            Changed::LastResult,
        ] {
            announce(self.emitter.connection(), changed).await;
        }
        let _ = Agent::job_finished(&self.emitter, self.id, succeeded, wire::to_dict(&report)).await;
    }
}

/// Emits each phase of job `id` as a PhaseChanged signal, outside the frozen window's code path.
async fn forward_phases(
    emitter: SignalEmitter<'static>,
    id: u64,
    state: Arc<Mutex<State>>,
    mut received: tokio::sync::mpsc::UnboundedReceiver<PhaseEvent>,
) {
    // Property changes go out from a task of their own, in order: computing them reads the
    // configuration, which must not hold up the next phase's signal (a group's coordinator
    // waits for `hold` with every member frozen).
    let (changes, mut to_announce) = tokio::sync::mpsc::unbounded_channel::<Changed>();
    let connection = emitter.connection().clone();
    let announcer = tokio::spawn(async move {
        while let Some(what) = to_announce.recv().await {
            announce(&connection, what).await;
        }
    });
    while let Some((phase, finished, ok, ms)) = received.recv().await {
        if !finished {
            if let Some(running) = state.lock().unwrap().running.as_mut() {
                running.phase = Some(phase);
            }
        }
        if finished {
            // Held by the log gate while frozen, like every line.
            tracing::info!(job = id, phase = %phase, ms = %format_args!("{ms:.1}"), ok, "phase finished");
        }
        let _ = Agent::phase_changed(&emitter, id, &phase.to_string(), finished, ok, ms).await;
        if !finished {
            let _ = changes.send(Changed::JobPhase);
        }
        if finished && matches!(phase, Phase::Freeze | Phase::Thaw) {
            let _ = changes.send(Changed::Frozen);
        }
    }
    drop(changes);
    let _ = announcer.await;
}

/// Forwards the transaction's phases to a task that emits them as signals: the observer is
/// called inside the frozen window, so it only queues.
struct SignalObserver {
    events: tokio::sync::mpsc::UnboundedSender<PhaseEvent>,
    notifier: Notifier,
}

impl Observer for SignalObserver {
    fn phase_started(&self, phase: Phase) {
        self.notifier.status(phase.activity());
        let _ = self.events.send((phase, false, true, 0.0));
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration, ok: bool) {
        let _ = self
            .events
            .send((phase, true, ok, elapsed.as_secs_f64() * 1000.0));
    }
}

// The served side of `org.freezeframe.Agent1`; clients call it through the contract's
// `Agent1Proxy`, which `tests::the_contracts_proxy_reaches_every_member` holds to this.
#[zbus::interface(name = "org.freezeframe.Agent1")]
impl Agent {
    /// Starts a snapshot; returns its job id (counted from 1 by each agent process) at once.
    /// Progress comes as PhaseChanged signals and the result as JobFinished, both carrying the
    /// job id.
    #[zbus(out_args("job"))]
    async fn snapshot(
        &self,
        options: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<u64, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        let options = parse_options(&options, OptionsOf::Snapshot)?;
        self.refuse_when_stopping()?;
        let emitter = emitter.into_owned();
        if options.dry_run {
            return Ok(self.dry_run(settings, options.request, emitter));
        }
        let (id, interrupt, _) = self.claim_job(&settings, None).await?;
        let job = Job {
            id,
            settings,
            request: options.request,
            state: self.state.clone(),
            listings: self.listings.clone(),
            emitter,
            group: None,
        };
        tokio::spawn(job.run(interrupt));
        Ok(id)
    }

    /// Starts this machine's part of a consistency group's snapshot (option `group`, the
    /// group's id, is required); returns its job id. The job runs preflight, quiesces and
    /// flushes, then waits (phase `ready`) for Freeze, at most `timeout-ms` from this call (a
    /// timeout above `agent.max_prepare_timeout` is refused before anything starts, so no
    /// caller holds this machine quiesced longer); freezes and waits (phase `hold`) for
    /// Commit; then requests its snapshot and thaws as Snapshot does. Only the caller may call
    /// Freeze and Commit; when it leaves the bus before committing, the job aborts: it thaws
    /// and resumes at once and requests nothing. Abort does the same on request. After a group
    /// job here ended without a commit, Prepare from anyone but root is refused (Busy, saying
    /// when to try again) for as long as that job held this machine.
    #[zbus(out_args("job"))]
    async fn prepare(
        &self,
        options: Dict,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<u64, AgentError> {
        let (settings, _, caller) = self.admit_caller(Access::Change, connection, &header).await?;
        if caller.uid != 0 {
            let cool_down = self.state.lock().unwrap().prepare_cool_down;
            if let Some(cool_down) = cool_down {
                cool_down.check(caller.uid)?;
            }
        }
        self.touch();
        let options = parse_options(&options, OptionsOf::Prepare)?;
        let prepare_timeout =
            group::prepare_timeout(options.prepare_timeout, settings.service.max_prepare_timeout)?;
        self.refuse_when_stopping()?;
        let coordinator = header
            .sender()
            .ok_or_else(|| AgentError::AccessDenied("the call has no sender".into()))?
            .to_string();
        let slot = group::GroupSlot::new(coordinator);
        let (id, interrupt, stop) = self.claim_job(&settings, Some(slot.clone())).await?;
        let watcher = match group::watch_coordinator(connection, slot.clone(), stop).await {
            Ok(watcher) => watcher,
            Err(e) => {
                self.state.lock().unwrap().running = None;
                return Err(e);
            }
        };
        let barrier = group::ServiceBarrier {
            group: options.group.unwrap_or_default(),
            slot,
            prepare_deadline: tokio::time::Instant::now() + prepare_timeout,
        };
        let job = Job {
            id,
            settings,
            request: options.request,
            state: self.state.clone(),
            listings: self.listings.clone(),
            emitter: emitter.into_owned(),
            group: Some((barrier, watcher)),
        };
        tokio::spawn(job.run(interrupt));
        Ok(id)
    }

    /// The coordinator's word to group job `job`, quiesced and flushed (phase `ready`): freeze.
    async fn freeze(&self, job: u64, #[zbus(header)] header: Header<'_>) -> Result<(), AgentError> {
        self.release(job, &header, BarrierPoint::Synced)
    }

    /// The coordinator's word to group job `job`, frozen (phase `hold`): request the snapshot.
    async fn commit(&self, job: u64, #[zbus(header)] header: Header<'_>) -> Result<(), AgentError> {
        self.release(job, &header, BarrierPoint::Frozen)
    }

    /// Aborts group job `job` before its commit: it thaws and resumes at once, requests
    /// nothing, and its report gives `reason`. Only its coordinator (the caller of its Prepare)
    /// and root may; refused once committed (the request is out).
    async fn abort(
        &self,
        job: u64,
        reason: &str,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(), AgentError> {
        let (_, _, caller) = self.admit_caller(Access::Change, connection, &header).await?;
        let (slot, stop) = self.group_job(job)?;
        if caller.uid != 0 {
            slot.check_may_abort(header.sender().map(|s| s.as_str()), job)?;
        }
        self.touch();
        if slot.committed() {
            return Err(AgentError::Failed(format!(
                "job {job} is committed: its request is out, and it thaws as soon as the snapshot registers"
            )));
        }
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        stop.stop(format!("aborted by the group's coordinator: {reason}"));
        Ok(())
    }

    /// What a snapshot would freeze and quiesce, typed ([`wire`]), with the keys of
    /// `freezeframe-agent plan --json`.
    #[zbus(out_args("plan"))]
    async fn plan(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Dict, AgentError> {
        let settings = self.admit(Access::Read, connection, &header).await?;
        let plan = job::snapshot_plan(&settings)
            .await
            .map_err(|e| AgentError::Failed(format!("cannot plan: {e}")))?;
        Ok(wire::to_dict(&plan))
    }

    /// The agent's version, provider, the running job, whether anything is frozen now, and the
    /// last result.
    #[zbus(out_args("status"))]
    async fn status(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Dict, AgentError> {
        let settings = self.admit(Access::Read, connection, &header).await?;
        let (dir, history_file) = (settings.runtime_dir.clone(), settings.history.file.clone());
        // A mkdir, a stat and a file read: on the blocking pool.
        let (frozen, history) = crate::blocking::run(move || {
            let runtime_dir = RuntimeDir::open(&dir)?;
            Ok::<_, RuntimeError>((
                runtime_dir.record_path().exists(),
                crate::history::load(&history_file),
            ))
        })
        .await
        .map_err(|e| AgentError::Failed(e.to_string()))?;
        let droplet_id = match &settings.snapshot.provider {
            crate::config::ProviderSettings::DigitalOcean(d) => d.droplet_id,
            crate::config::ProviderSettings::LocalImage { .. } => None,
        };
        Ok(wire::to_dict(&AgentStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            provider: settings.snapshot.provider.name().to_string(),
            droplet_id,
            frozen,
            running_job: self.busy().unwrap_or(0),
            last_result: self.last_report(&settings).await,
            history: Some(history),
        }))
    }

    /// This machine's snapshots, oldest first: id, name, created_at, size_bytes. Callers let
    /// in by `agent.public_read` alone get an answer up to 30 s old (each costs API calls);
    /// root and the group a fresh one. A snapshot this agent takes or deletes renews it.
    #[zbus(out_args("snapshots"))]
    async fn list_snapshots(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let (settings, admitted) = self.admit_as(Access::Read, connection, &header).await?;
        let fresh = admitted == access::Admitted::Privileged;
        let mut list = self
            .listings
            .get(&settings.snapshot, fresh, || async {
                job::provider(&settings).list().await.map_err(Arc::new)
            })
            .await
            .map_err(|e| AgentError::Failed(crate::errors::error_chain(&*e)))?;
        let host = crate::naming::hostname();
        for s in &mut list {
            s.group = settings.snapshot.group_name_template.group_of(&host, &s.name);
        }
        Ok(list.iter().map(wire::to_dict).collect())
    }

    /// Deletes this machine's snapshots of the consistency groups `groups` (their ids), as
    /// `snapshot.group_name_template` names them; returns the deleted. Group retention calls
    /// it on every member, so a group is deleted whole.
    #[zbus(out_args("deleted"))]
    async fn delete_groups(
        &self,
        groups: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        self.groups_pruned(&settings, groups, false).await
    }

    /// What `DeleteGroups(groups)` would delete now; deletes nothing.
    #[zbus(out_args("would_delete"))]
    async fn delete_groups_dry_run(
        &self,
        groups: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        self.groups_pruned(&settings, groups, true).await
    }

    /// Deletes all but the newest `keep_last` of this machine's snapshots; returns the deleted.
    #[zbus(out_args("deleted"))]
    async fn prune(
        &self,
        keep_last: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        self.pruned(&settings, keep_last, false).await
    }

    /// What `Prune(keep_last)` would delete now; deletes nothing.
    #[zbus(out_args("would_delete"))]
    async fn prune_dry_run(
        &self,
        keep_last: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        self.pruned(&settings, keep_last, true).await
    }

    /// The emergency exit, as `freezeframe-agent thaw`: thaws what a dead agent's record lists
    /// and runs the resumes it owed. Refused while a snapshot runs (its own guard bounds it).
    #[zbus(out_args("filesystems", "resumes"))]
    async fn thaw(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<(Vec<RecoveredFilesystem>, Vec<RecoveredResume>), AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        if let Some(running) = self.busy() {
            return Err(AgentError::Busy(format!(
                "snapshot job {running} is running; it thaws by itself, within max_freeze at the latest"
            )));
        }
        // Held while recovering, so no snapshot starts meanwhile. Busy: a one-shot snapshot
        // runs, or a guard still holds its filesystems (it thaws them by its deadline). A mkdir
        // and a lock file opened and written: on the blocking pool.
        let dir = settings.runtime_dir.clone();
        let _lock = crate::blocking::run(move || {
            let runtime_dir = RuntimeDir::open(&dir).map_err(|e| AgentError::Failed(e.to_string()))?;
            runtime_dir.lock().map_err(|e| AgentError::Busy(e.to_string()))
        })
        .await?;
        let bus = crate::dbus::system_bus().await.ok();
        let recovered =
            crate::runtime::recover(&settings.runtime_dir, bus.as_ref(), settings.quiesce.hook_timeout)
                .await
                .map_err(|e| {
                    AgentError::Failed(format!("cannot recover {}: {e}", settings.runtime_dir.display()))
                })?;
        for line in recovered.text("").lines().filter(|_| !recovered.is_empty()) {
            tracing::warn!("thaw asked over D-Bus: {line}");
        }
        Ok((recovered.filesystems, recovered.resumes))
    }

    /// Runs every preflight check on its own: name, ok, detail and, for a failure, fix.
    #[zbus(out_args("checks"))]
    async fn check(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> Result<Vec<Dict>, AgentError> {
        let settings = self.admit(Access::Change, connection, &header).await?;
        if let Some(running) = self.busy() {
            return Err(AgentError::Busy(format!("snapshot job {running} is running")));
        }
        Ok(crate::checks::run(&settings)
            .await
            .iter()
            .map(wire::to_dict)
            .collect())
    }

    /// The id of the snapshot job running now; 0 when none. Changes are signalled.
    #[zbus(property)]
    async fn running_job(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<u64> {
        self.admit_reader(header, connection).await?;
        Ok(self.busy().unwrap_or(0))
    }

    /// The phase the running job is in (`quiesce`, `ready`, `hold`, …); empty when none runs.
    /// Changes are signalled.
    #[zbus(property)]
    async fn job_phase(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<String> {
        self.admit_reader(header, connection).await?;
        let state = self.state.lock().unwrap();
        Ok(state
            .running
            .as_ref()
            .and_then(|r| r.phase)
            .map(|p| p.to_string())
            .unwrap_or_default())
    }

    /// Whether a run's filesystems are frozen now (its record exists). Changes are signalled.
    #[zbus(property)]
    async fn frozen(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<bool> {
        let settings = self.admit_reader(header, connection).await?;
        // A stat, nothing more: this is read inside the window too (for the change signal),
        // where even a mkdir of an existing folder would wait on a frozen filesystem. On the
        // blocking pool, as a stat on a hung filesystem waits too.
        let record = settings.runtime_dir.join(crate::guard::record::RECORD_FILE);
        Ok(crate::blocking::run(move || record.exists()).await)
    }

    /// The last run's report, typed as `Status`'s `last_result`; empty before the first run.
    #[zbus(property)]
    async fn last_result(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &zbus::Connection,
    ) -> zbus::fdo::Result<Dict> {
        let settings = self.admit_reader(header, connection).await?;
        Ok(self
            .last_report(&settings)
            .await
            .map(|r| wire::to_dict(&r))
            .unwrap_or_default())
    }

    /// The agent's version.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// A phase of `job` started (`finished` false) or finished, with its duration and outcome.
    #[zbus(signal)]
    async fn phase_changed(
        emitter: &SignalEmitter<'_>,
        job: u64,
        phase: &str,
        finished: bool,
        ok: bool,
        elapsed_ms: f64,
    ) -> zbus::Result<()>;

    /// `job` ended; `report` is its report, typed ([`wire`]), with the keys of
    /// `freezeframe-agent snapshot --json` (for a dry run, the plan).
    #[zbus(signal)]
    async fn job_finished(
        emitter: &SignalEmitter<'_>,
        job: u64,
        succeeded: bool,
        report: Dict,
    ) -> zbus::Result<()>;
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error(transparent)]
    /// The configuration is not valid.
    Config(#[from] ConfigError),
    #[error("cannot serve {BUS_NAME} on the system bus ({address}): {source}")]
    /// The bus could not be reached or the name not taken.
    Bus {
        /// The bus's address.
        address: String,
        #[source]
        /// What failed.
        source: zbus::Error,
    },
    #[error("cannot serve metrics on {address} (metrics.listen): {source}")]
    /// The metrics address could not be bound (in use, or not this machine's).
    Metrics {
        /// `metrics.listen`.
        address: std::net::SocketAddr,
        #[source]
        /// What failed.
        source: std::io::Error,
    },
}

/// Ends a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves until idle for `agent.idle_exit`, or until SIGTERM/SIGINT (after the running job
/// wound down through thaw and resume).
pub(crate) async fn serve(config: Option<PathBuf>) -> Result<(), ServiceError> {
    let sources = match &config {
        Some(path) => ConfigSources::explicit(path),
        None => ConfigSources::system(),
    };
    // A broken configuration is reported now, not at the first call.
    let settings = sources.load()?;
    let state = Arc::new(Mutex::new(State {
        running: None,
        next_job: 0,
        last_activity: Instant::now(),
        last_result: None,
        prepare_cool_down: None,
    }));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agent = Agent {
        config,
        state: state.clone(),
        listings: Arc::new(listing::ListCache::new()),
        group: access::group_id(),
        stopping: stopping.clone(),
        claiming: Arc::default(),
    };
    let bus_error = |source| ServiceError::Bus {
        address: crate::dbus::system_bus_address(),
        source,
    };
    let connection = zbus::connection::Builder::system()
        .serve_at(OBJECT_PATH, agent)
        .name(BUS_NAME)
        .build()
        .await
        .map_err(bus_error)?;
    let notifier = Notifier::from_env();
    notifier.send("READY=1\nSTATUS=waiting for calls");
    tracing::info!(bus = %crate::dbus::system_bus_address(), "serving {BUS_NAME}");

    let watchdog = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|us| us.parse::<u64>().ok())
        .map(|us| Duration::from_micros(us / 2));
    let mut tick = tokio::time::interval(
        watchdog
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1)),
    );
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    // Metrics served here need an agent that stays: no idle exit then.
    let _metrics = match settings.metrics.listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| ServiceError::Metrics { address, source })?;
            tracing::info!("serving metrics at http://{address}/metrics");
            Some(AbortOnDrop(tokio::spawn(crate::metrics::serve_http(
                listener,
                settings.clone(),
            ))))
        }
        None => None,
    };
    let idle_exit = match settings.metrics.listen {
        Some(_) => Duration::MAX,
        None => settings.service.idle_exit,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if watchdog.is_some() {
                    notifier.send("WATCHDOG=1");
                }
                let state = state.lock().unwrap();
                if state.running.is_none() && state.last_activity.elapsed() >= idle_exit {
                    tracing::info!("idle for {}: exiting", humantime::format_duration(idle_exit));
                    break;
                }
            }
            _ = async { term.as_mut().unwrap().recv().await }, if term.is_some() => break,
            _ = async { int.as_mut().unwrap().recv().await }, if int.is_some() => break,
        }
    }
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    notifier.send("STOPPING=1");
    // Let a running job wind down (thaw, resume) and deliver its result before going.
    if let Some(running) = &state.lock().unwrap().running {
        running.stop.signal();
    }
    while state.lock().unwrap().running.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connection.release_name(BUS_NAME).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{OwnedVariant, Variant};

    fn variant(value: impl Into<Variant<'static>>) -> OwnedVariant {
        OwnedVariant::try_from(value.into()).expect("no file descriptors in these values")
    }

    #[test]
    fn options_are_typed_and_known() {
        let options: Dict = HashMap::from([
            ("name".to_string(), variant("nightly-1".to_string())),
            ("wait".to_string(), variant(true)),
        ]);
        let parsed = parse_options(&options, OptionsOf::Snapshot).unwrap();
        assert_eq!(parsed.request.name.as_deref(), Some("nightly-1"));
        assert!(parsed.request.wait && !parsed.dry_run);

        for (key, value, expected) in [
            ("wait", variant("yes".to_string()), "must be a boolean"),
            ("name", variant(7u32), "must be a string"),
            ("name", variant("a/b".to_string()), "name"),
            ("name", variant("x".repeat(100_000)), "name"),
            ("colour", variant(true), "unknown option `colour`"),
        ] {
            let err =
                parse_options(&HashMap::from([(key.to_string(), value)]), OptionsOf::Snapshot).unwrap_err();
            assert!(
                matches!(&err, AgentError::InvalidArgs(m) if m.contains(expected)),
                "{key}: {err}"
            );
        }
    }

    /// A group member's `max-freeze-ms`, below `freeze.max_freeze`, is the bound the provider's
    /// request is handed (its own time limits, DigitalOcean's POST): the road from the bus
    /// through the job's spec and the transaction.
    #[tokio::test]
    async fn a_lower_max_freeze_asked_on_the_bus_reaches_the_providers_request() {
        let options: Dict = HashMap::from([
            ("group".to_string(), variant("g0000abcd".to_string())),
            ("max-freeze-ms".to_string(), variant(2_000u64)),
        ]);
        let request = parse_options(&options, OptionsOf::Prepare).unwrap().request;
        let mut settings = Settings::validate(crate::config::ConfigFile::default()).unwrap();
        settings.freeze.max_freeze = Duration::from_secs(20);
        let mut run = crate::transaction::tests::Setup::new(&[]);
        run.spec = Some(job::snapshot_spec(
            &settings,
            &request,
            crate::naming::SnapshotName::Fixed("snap".into()),
            false,
            job::own_names(&settings),
            Vec::new(),
        ));
        let asked = run.provider.max_freeze_asked.clone();
        let (report, _, _) = run.run().await;
        assert_eq!(report.status, Status::Succeeded, "{report:?}");
        assert_eq!(*asked.lock().unwrap(), [Duration::from_secs(2)]);
    }

    /// The agent and a client of the contract's `Agent1Proxy`, peer to peer: no bus, so no
    /// caller has a sender and every admitted method refuses it (AccessDenied), after zbus has
    /// matched the call's name and signature against the served interface.
    async fn served_and_proxy() -> (zbus::Connection, freezeframe_contract::Agent1Proxy<'static>) {
        let (server, client) = std::os::unix::net::UnixStream::pair().unwrap();
        let agent = Agent {
            config: Some(PathBuf::from("/nonexistent/freezeframe.toml")),
            state: Arc::new(Mutex::new(State {
                running: None,
                next_job: 0,
                last_activity: Instant::now(),
                last_result: None,
                prepare_cool_down: None,
            })),
            listings: Arc::new(listing::ListCache::new()),
            group: None,
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            claiming: Arc::default(),
        };
        let server = zbus::connection::Builder::unix_stream(server)
            .server(zbus::Guid::generate())
            .p2p()
            .serve_at(OBJECT_PATH, agent)
            .build();
        let client = zbus::connection::Builder::unix_stream(client).p2p().build();
        let (server, client) = tokio::try_join!(server, client).unwrap();
        let proxy = freezeframe_contract::Agent1Proxy::new(&client).await.unwrap();
        (server, proxy)
    }

    /// What the served interface made of a call: `Err` when zbus refused it before the
    /// method (no such member, or another signature), which means the proxy has drifted.
    fn reached<T: std::fmt::Debug>(member: &str, answer: Result<T, AgentError>) {
        if let Err(AgentError::ZBus(e)) = &answer {
            panic!("{member}: the served interface does not take the proxy's call: {e}");
        }
    }

    #[tokio::test]
    async fn the_contracts_proxy_reaches_every_member_of_the_served_interface() {
        let (server, agent) = served_and_proxy().await;
        reached("Snapshot", agent.snapshot(Dict::new()).await);
        reached("Prepare", agent.prepare(Dict::new()).await);
        reached("Freeze", agent.freeze(1).await);
        reached("Commit", agent.commit(1).await);
        reached("Abort", agent.abort(1, "test").await);
        reached("Plan", agent.plan().await);
        reached("Status", agent.status().await);
        reached("ListSnapshots", agent.list_snapshots().await);
        reached(
            "DeleteGroups",
            agent.delete_groups(vec!["g0123abcd".into()]).await,
        );
        reached("Prune", agent.prune(1).await);
        reached("PruneDryRun", agent.prune_dry_run(1).await);
        reached(
            "DeleteGroupsDryRun",
            agent.delete_groups_dry_run(vec!["g0123abcd".into()]).await,
        );
        reached("Thaw", agent.thaw().await);
        reached("Check", agent.check().await);
        assert_eq!(agent.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
        // The other properties check the reader: refused, which is found only by their name.
        let refused = |name: &str, e: zbus::Error| {
            assert!(
                matches!(&e, zbus::Error::FDO(f) if matches!(**f, zbus::fdo::Error::AccessDenied(_))),
                "{name}: {e}"
            )
        };
        refused("RunningJob", agent.running_job().await.unwrap_err());
        refused("JobPhase", agent.job_phase().await.unwrap_err());
        refused("Frozen", agent.frozen().await.unwrap_err());
        refused("LastResult", agent.last_result().await.unwrap_err());

        // The signals, as the agent sends them, read by the proxy's typed streams.
        use futures_util::StreamExt;
        let mut phases = agent.receive_phase_changed().await.unwrap();
        let mut finished = agent.receive_job_finished().await.unwrap();
        let emitter = SignalEmitter::new(&server, OBJECT_PATH).unwrap();
        Agent::phase_changed(&emitter, 7, "freeze", true, true, 1.5)
            .await
            .unwrap();
        let report = Report::not_started("busy".into());
        Agent::job_finished(&emitter, 7, false, wire::to_dict(&report))
            .await
            .unwrap();
        let phase = phases.next().await.unwrap();
        let args = phase.args().unwrap();
        assert_eq!(
            (args.job, args.phase, args.finished, args.ok, args.elapsed_ms),
            (7, "freeze", true, true, 1.5)
        );
        let done = finished.next().await.unwrap();
        let args = done.args().unwrap();
        assert_eq!((args.job, args.succeeded), (7, false));
        assert_eq!(wire::from_dict::<Report>(&args.report).unwrap(), report);
    }
}
