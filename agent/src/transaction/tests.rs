//! The transaction on every path, with doubles that record what was called in which order.

use super::*;
use crate::naming::{NameTemplate, OwnNames, SnapshotName};
use ports::{
    ClaimLimit, Completion, DevNum, FilesystemsError, FreezeOutcome, OwnedNames, ProviderError, Pruned,
    QuiesceError, Retained, Target, ThawReport,
};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, event: impl Into<String>) {
    log.lock().unwrap().push(event.into());
}

fn target(mp: &str) -> Target {
    Target {
        mountpoint: mp.into(),
        mount_id: 1,
        dev: DevNum { major: 7, minor: 0 },
        fstype: "ext4".into(),
        source: "/dev/loop0".into(),
        also_mounted_at: Vec::new(),
    }
}

fn fs_error(message: &str) -> FilesystemsError {
    FilesystemsError::new(std::io::Error::other(message.to_string()))
}

#[derive(Default)]
struct FakeFs {
    log: Log,
    /// The probe's markers asked for, apart from the phases' log.
    marks: Log,
    targets: Vec<Target>,
    fail_preflight: bool,
    fail_sync: bool,
    fail_freeze: bool,
    not_supported: Vec<Target>,
    /// What the guard does, after how long, once frozen.
    guard: Option<(Duration, GuardEvent)>,
    frozen: bool,
    /// How long before the freeze the guard's clock started (freezing many filesystems).
    armed_before_freeze: Option<Duration>,
}

#[async_trait::async_trait]
impl Filesystems for FakeFs {
    fn targets(&self) -> &[Target] {
        &self.targets
    }
    fn mark(&mut self, snapshot: &str, moment: ProbeMoment, record: &MarkerRecord) -> Vec<String> {
        note(
            &self.marks,
            format!("{snapshot} {} {}", moment.as_str(), record.consistency.as_str()),
        );
        Vec::new()
    }
    fn preflight(&mut self) -> Result<(), FilesystemsError> {
        note(&self.log, "fs.preflight");
        if self.fail_preflight {
            return Err(fs_error("freezing filesystems needs CAP_SYS_ADMIN"));
        }
        Ok(())
    }
    async fn sync(&mut self) -> Result<(), FilesystemsError> {
        note(&self.log, "fs.sync");
        if self.fail_sync {
            return Err(fs_error("cannot flush /data (syncfs): EIO"));
        }
        Ok(())
    }
    fn freeze(&mut self, _max: Duration) -> Result<FreezeOutcome, FilesystemsError> {
        note(&self.log, "fs.freeze");
        if self.fail_freeze {
            return Err(fs_error("/data is already frozen by another process"));
        }
        self.frozen = true;
        Ok(FreezeOutcome {
            frozen: self
                .targets
                .iter()
                .filter(|t| !self.not_supported.contains(t))
                .cloned()
                .collect(),
            not_supported: self.not_supported.clone(),
            guard_armed_at: self
                .armed_before_freeze
                .map(|lead| std::time::Instant::now() - lead),
            freezing: Duration::from_millis(1),
        })
    }
    async fn guard_tripped(&mut self) -> GuardEvent {
        match self.guard {
            Some((after, event)) if self.frozen => {
                tokio::time::sleep(after).await;
                event
            }
            _ => std::future::pending().await,
        }
    }
    fn thaw(&mut self) -> ThawReport {
        note(&self.log, "fs.thaw");
        self.frozen = false;
        ThawReport {
            frozen_for: Duration::from_millis(5),
            thawing: Duration::from_millis(2),
            guard_event: None,
            errors: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Behaviour {
    #[default]
    Works,
    Fails,
    Hangs,
}

#[derive(Default)]
struct FakeProvider {
    log: Log,
    preflight: Behaviour,
    request: Behaviour,
    /// Names of existing snapshots, oldest first, for retention.
    existing: Vec<String>,
    prune: Behaviour,
    ready: Behaviour,
    /// What preflight "learned" bounds the claim.
    limit: Option<ClaimLimit>,
}

#[async_trait::async_trait]
impl SnapshotProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn claim_limit(&self) -> Option<ClaimLimit> {
        self.limit.clone()
    }
    async fn preflight(&mut self, _name: &str, _targets: &[Target]) -> Result<(), ProviderError> {
        note(&self.log, "provider.preflight");
        match self.preflight {
            Behaviour::Fails => Err(ProviderError::new("token rejected")),
            _ => Ok(()),
        }
    }
    async fn ready(&mut self) -> Result<(), ProviderError> {
        note(&self.log, "provider.ready");
        match self.ready {
            Behaviour::Fails => Err(ProviderError::new("connection refused")),
            _ => Ok(()),
        }
    }
    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        _: Duration,
    ) -> Result<Registration, ProviderError> {
        note(&self.log, format!("provider.request {name} {}", frozen.len()));
        match self.request {
            Behaviour::Works => Ok(Registration {
                action_id: "42".into(),
                completed: false,
                volume_snapshots: Vec::new(),
            }),
            Behaviour::Fails => Err(ProviderError::new("HTTP 500")),
            Behaviour::Hangs => std::future::pending().await,
        }
    }
    async fn prune(&mut self, keep_last: usize, ours: &dyn OwnedNames) -> Result<Retained, ProviderError> {
        note(&self.log, format!("provider.prune {keep_last}"));
        if self.prune == Behaviour::Fails {
            return Err(ProviderError::new("HTTP 403"));
        }
        let mine: Vec<&String> = self.existing.iter().filter(|n| ours.is_ours(n)).collect();
        let excess = mine.len().saturating_sub(keep_last);
        Ok(Retained {
            kept: mine.len() - excess,
            pruned: mine
                .into_iter()
                .take(excess)
                .map(|n| Pruned {
                    id: format!("id-{n}"),
                    name: n.clone(),
                })
                .collect(),
        })
    }
    async fn wait_completed(&mut self, r: &Registration) -> Result<Completion, ProviderError> {
        note(&self.log, format!("provider.wait {}", r.action_id));
        Ok(Completion {
            snapshot_id: Some("snap-1".into()),
            size_bytes: None,
        })
    }
}

struct FakeQuiescer {
    name: String,
    log: Log,
    check: Behaviour,
    prepare: Behaviour,
    resume: Behaviour,
}

fn quiescer(log: &Log, name: &str) -> FakeQuiescer {
    FakeQuiescer {
        name: name.into(),
        log: log.clone(),
        check: Behaviour::Works,
        prepare: Behaviour::Works,
        resume: Behaviour::Works,
    }
}

async fn act(b: Behaviour) -> Result<(), QuiesceError> {
    match b {
        Behaviour::Works => Ok(()),
        Behaviour::Fails => Err(QuiesceError::with_source(
            "refused",
            std::io::Error::other("the database reset the connection"),
        )),
        Behaviour::Hangs => std::future::pending().await,
    }
}

#[async_trait::async_trait]
impl Quiescer for FakeQuiescer {
    fn name(&self) -> &str {
        &self.name
    }
    fn prepare_timeout(&self) -> Duration {
        Duration::from_secs(3)
    }
    async fn check(&mut self, _targets: &[Target]) -> Result<(), QuiesceError> {
        note(&self.log, format!("{}.check", self.name));
        act(self.check).await
    }
    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        note(&self.log, format!("{}.prepare", self.name));
        act(self.prepare).await
    }
    async fn resume(&mut self) -> Result<(), QuiesceError> {
        note(&self.log, format!("{}.resume", self.name));
        act(self.resume).await
    }
}

/// Records phase starts, to check the observer sees every phase in order.
#[derive(Default)]
struct Phases(Mutex<Vec<Phase>>);
impl Observer for Phases {
    fn phase_started(&self, phase: Phase) {
        self.0.lock().unwrap().push(phase);
    }
}

struct Setup {
    log: Log,
    fs: FakeFs,
    provider: FakeProvider,
    quiescers: Vec<FakeQuiescer>,
    policy: QuiescePolicy,
    wait: bool,
    interrupt: Interrupt,
    name: SnapshotName,
    retention: Option<Retention>,
    unquiesced: Vec<String>,
    barrier: Option<FakeBarrier>,
}

/// A group's barrier: what the coordinator says at each point.
struct FakeBarrier {
    log: Log,
    synced: Behaviour,
    frozen: Behaviour,
}

#[async_trait::async_trait]
impl Barrier for FakeBarrier {
    fn group(&self) -> &str {
        "g0000abcd"
    }
    fn arrived(&mut self, point: BarrierPoint) {
        note(&self.log, format!("barrier.{point:?}"));
    }
    async fn released(&mut self, point: BarrierPoint) -> Result<(), BarrierError> {
        let word = match point {
            BarrierPoint::Synced => self.synced,
            BarrierPoint::Frozen => self.frozen,
        };
        match word {
            Behaviour::Works => Ok(()),
            Behaviour::Fails => Err(BarrierError::Deadline(point)),
            Behaviour::Hangs => std::future::pending().await,
        }
    }
}

impl Setup {
    fn new(quiescers: &[&str]) -> Self {
        let log = Log::default();
        Setup {
            fs: FakeFs {
                log: log.clone(),
                targets: vec![target("/data"), target("/")],
                ..Default::default()
            },
            provider: FakeProvider {
                log: log.clone(),
                ..Default::default()
            },
            quiescers: quiescers.iter().map(|n| quiescer(&log, n)).collect(),
            log,
            policy: QuiescePolicy::Abort,
            wait: false,
            interrupt: Interrupt::never(),
            name: SnapshotName::Fixed("snap".into()),
            retention: None,
            unquiesced: Vec::new(),
            barrier: None,
        }
    }

    /// A member of a group whose coordinator answers `synced` and `frozen` so.
    fn member(quiescers: &[&str], synced: Behaviour, frozen: Behaviour) -> Self {
        let mut s = Setup::new(quiescers);
        s.barrier = Some(FakeBarrier {
            log: s.log.clone(),
            synced,
            frozen,
        });
        s
    }

    async fn run(mut self) -> (Report, Vec<String>, Vec<Phase>) {
        let phases = Phases::default();
        let report = Transaction {
            filesystems: &mut self.fs,
            provider: &mut self.provider,
            quiescers: self
                .quiescers
                .into_iter()
                .map(|q| Box::new(q) as Box<dyn Quiescer>)
                .collect(),
            observer: &phases,
            spec: SnapshotSpec {
                name: Arc::new(self.name),
                max_freeze: Duration::from_secs(2),
                wait: self.wait,
                on_quiesce_failure: self.policy,
                retention: self.retention,
                unquiesced: self.unquiesced,
            },
            skipped: Vec::new(),
            interrupt: self.interrupt,
            barrier: self.barrier.as_mut().map(|b| b as &mut dyn Barrier),
        }
        .run()
        .await;
        let log = self.log.lock().unwrap().clone();
        (report, log, phases.0.into_inner().unwrap())
    }
}

#[tokio::test]
async fn the_happy_path_runs_every_phase_in_order() {
    let (report, log, phases) = Setup::new(&["db", "cache"]).run().await;
    assert_eq!(
        log,
        [
            "fs.preflight",
            "provider.preflight",
            "db.check",
            "cache.check",
            "db.prepare",
            "cache.prepare",
            "fs.sync",
            "provider.ready",
            "fs.freeze",
            "provider.request snap 2",
            "fs.thaw",
            "cache.resume",
            "db.resume",
        ]
    );
    assert_eq!(
        phases,
        [
            Phase::Preflight,
            Phase::Quiesce,
            Phase::Sync,
            Phase::Freeze,
            Phase::Request,
            Phase::Thaw,
            Phase::Resume
        ]
    );
    assert_eq!(report.status, Status::Succeeded);
    assert_eq!(report.consistency, Some(Consistency::Application));
    assert_eq!(report.action_id.as_deref(), Some("42"));
    assert_eq!(report.frozen_ms, 5.0);
    assert_eq!((report.freezing_ms, report.thawing_ms), (1.0, 2.0));
    assert!(report.quiescers.iter().all(|q| q.prepared && q.resumed));
    assert_eq!(report.filesystems.frozen.len(), 2);
}

#[tokio::test]
async fn without_quiescers_the_snapshot_is_filesystem_consistent() {
    let (report, _, _) = Setup::new(&[]).run().await;
    assert_eq!(report.consistency, Some(Consistency::Filesystem));
}

#[tokio::test]
async fn a_preflight_failure_touches_nothing() {
    let mut s = Setup::new(&["db"]);
    s.provider.preflight = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert_eq!(log, ["fs.preflight", "provider.preflight"]);
    assert_eq!(report.failed_phase, Some(Phase::Preflight));
    assert!(report.error.unwrap().contains("fake provider: token rejected"));
    assert_eq!(report.consistency, None);

    let mut s = Setup::new(&["db"]);
    s.quiescers[0].check = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert!(
        !log.iter().any(|e| e.contains("prepare") || e.contains("freeze")),
        "{log:?}"
    );
    assert_eq!(report.failed_phase, Some(Phase::Preflight));
}

#[tokio::test]
async fn no_targets_is_a_preflight_error() {
    let mut s = Setup::new(&[]);
    s.fs.targets.clear();
    let (report, log, _) = s.run().await;
    assert!(log.is_empty(), "{log:?}");
    assert!(report.error.unwrap().contains("no filesystem to freeze"));
}

#[tokio::test]
async fn a_failed_prepare_aborts_and_resumes_every_prepare_that_started_in_reverse() {
    let mut s = Setup::new(&["a", "b", "c"]);
    s.quiescers[1].prepare = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    let after_checks: Vec<_> = log.iter().skip(5).map(String::as_str).collect();
    assert_eq!(after_checks, ["a.prepare", "b.prepare", "b.resume", "a.resume"]);
    assert_eq!(report.status, Status::Failed);
    assert_eq!(report.failed_phase, Some(Phase::Quiesce));
    assert!(report
        .error
        .as_deref()
        .unwrap()
        .contains("quiescer b failed to prepare: refused"));
    assert!(report.quiescers[0].resumed && report.quiescers[1].resumed && !report.quiescers[2].resumed);
}

/// A quiescer's error reaches the report with what failed under it, at check, prepare and
/// resume alike.
#[tokio::test]
async fn a_quiescer_failure_reaches_the_report_with_its_cause() {
    let cause = "refused: the database reset the connection";
    for (step, expected) in [
        ("check", format!("quiescer a: {cause}")),
        ("prepare", format!("quiescer a failed to prepare: {cause}")),
        ("resume", format!("quiescer a failed to resume: {cause}")),
    ] {
        let mut s = Setup::new(&["a"]);
        match step {
            "check" => s.quiescers[0].check = Behaviour::Fails,
            "prepare" => s.quiescers[0].prepare = Behaviour::Fails,
            _ => s.quiescers[0].resume = Behaviour::Fails,
        }
        let (report, _, _) = s.run().await;
        let error = report.error.as_deref().unwrap_or_default();
        assert!(error.contains(&expected), "{step}: {error}");
        if step != "check" {
            let own = report.quiescers[0].error.as_deref().unwrap_or_default();
            assert_eq!(own, cause, "{step}");
        }
    }
}

#[tokio::test]
async fn with_continue_a_failed_prepare_degrades_to_filesystem_consistency() {
    let mut s = Setup::new(&["a", "b"]);
    s.policy = QuiescePolicy::Continue;
    s.quiescers[0].prepare = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert!(log.contains(&"provider.request snap 2".to_string()));
    assert_eq!(report.status, Status::Succeeded);
    assert_eq!(report.consistency, Some(Consistency::Filesystem));
    assert_eq!(report.warnings.len(), 1);
    assert!(log.ends_with(&["b.resume".into(), "a.resume".into()]));
}

#[tokio::test(start_paused = true)]
async fn a_prepare_that_hangs_times_out_and_is_still_resumed() {
    let mut s = Setup::new(&["a", "b"]);
    s.quiescers[1].prepare = Behaviour::Hangs;
    let (report, log, _) = s.run().await;
    assert!(
        log.ends_with(&["b.prepare".into(), "b.resume".into(), "a.resume".into()]),
        "{log:?}"
    );
    assert!(report
        .error
        .unwrap()
        .contains("did not finish preparing within 3s"));
}

#[tokio::test]
async fn sync_and_freeze_failures_resume_and_never_request() {
    for fail_freeze in [false, true] {
        let mut s = Setup::new(&["a"]);
        s.fs.fail_sync = !fail_freeze;
        s.fs.fail_freeze = fail_freeze;
        let (report, log, _) = s.run().await;
        assert!(!log.iter().any(|e| e.starts_with("provider.request")), "{log:?}");
        assert_eq!(log.last().unwrap(), "a.resume");
        let phase = if fail_freeze { Phase::Freeze } else { Phase::Sync };
        assert_eq!(report.failed_phase, Some(phase));
        if fail_freeze {
            assert!(report
                .error
                .unwrap()
                .contains("already frozen by another process"));
        }
    }
}

#[tokio::test]
async fn a_failed_request_thaws_then_resumes_and_reports_no_snapshot() {
    let mut s = Setup::new(&["a"]);
    s.provider.request = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert!(log.ends_with(&[
        "provider.request snap 2".into(),
        "fs.thaw".into(),
        "a.resume".into()
    ]));
    assert_eq!(report.failed_phase, Some(Phase::Request));
    assert_eq!(report.consistency, None);
    assert!(report.error.unwrap().contains("HTTP 500"));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_request_is_cut_before_max_freeze() {
    let mut s = Setup::new(&["a"]);
    s.provider.request = Behaviour::Hangs;
    let started = tokio::time::Instant::now();
    let (report, log, _) = s.run().await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "thawed before the guard's deadline: {waited:?}"
    );
    assert_eq!(
        waited,
        Duration::from_secs(2) - deadline_margin(Duration::from_secs(2))
    );
    assert!(log.ends_with(&["fs.thaw".into(), "a.resume".into()]));
    assert_eq!(report.consistency, Some(Consistency::Crash));
    assert!(report
        .error
        .unwrap()
        .contains("did not register within max_freeze (2s)"));
}

#[tokio::test(start_paused = true)]
async fn a_guard_that_dies_ends_the_window_at_once() {
    let mut s = Setup::new(&[]);
    s.provider.request = Behaviour::Hangs;
    s.fs.guard = Some((Duration::from_millis(100), GuardEvent::Died));
    let started = tokio::time::Instant::now();
    let (report, log, _) = s.run().await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(log.last().unwrap(), "fs.thaw");
    assert!(report.error.unwrap().contains("thaw guard process died"));
}

#[tokio::test]
async fn a_failed_resume_fails_the_run_but_keeps_the_snapshot_and_resumes_the_rest() {
    let mut s = Setup::new(&["a", "b"]);
    s.quiescers[1].resume = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert!(log.ends_with(&["b.resume".into(), "a.resume".into()]));
    assert_eq!(report.status, Status::Failed);
    assert_eq!(report.failed_phase, Some(Phase::Resume));
    assert_eq!(report.action_id.as_deref(), Some("42"));
    assert!(report.quiescers[0].resumed && !report.quiescers[1].resumed);
}

#[tokio::test]
async fn an_interrupt_while_frozen_thaws_and_resumes() {
    let mut s = Setup::new(&["a"]);
    s.provider.request = Behaviour::Hangs;
    let (stop, interrupt) = Interrupt::new();
    s.interrupt = interrupt;
    let run = tokio::spawn(s.run());
    tokio::task::yield_now().await;
    stop.signal();
    let (report, log, _) = run.await.unwrap();
    assert!(log.ends_with(&["fs.thaw".into(), "a.resume".into()]), "{log:?}");
    assert!(report.error.unwrap().contains("interrupted"));
}

#[tokio::test]
async fn an_interrupt_during_a_slow_prepare_stops_it_and_resumes_what_started() {
    let mut s = Setup::new(&["a", "b"]);
    s.quiescers[1].prepare = Behaviour::Hangs;
    let log = s.log.clone();
    let (stop, interrupt) = Interrupt::new();
    s.interrupt = interrupt;
    let run = tokio::spawn(s.run());
    while !log.lock().unwrap().iter().any(|e| e == "b.prepare") {
        tokio::task::yield_now().await;
    }
    stop.signal();
    let (report, log, _) = run.await.unwrap();
    assert!(
        log.ends_with(&["b.prepare".into(), "b.resume".into(), "a.resume".into()]),
        "{log:?}"
    );
    assert!(!log.iter().any(|e| e == "fs.freeze"), "{log:?}");
    assert_eq!(report.failed_phase, Some(Phase::Quiesce));
    assert!(report.error.unwrap().contains("interrupted"));
}

#[tokio::test]
async fn an_interrupt_before_the_freeze_freezes_nothing() {
    let mut s = Setup::new(&["a"]);
    let (stop, interrupt) = Interrupt::new();
    stop.signal();
    s.interrupt = interrupt;
    let (report, log, _) = s.run().await;
    assert!(
        !log.iter().any(|e| e == "fs.freeze" || e == "a.prepare"),
        "{log:?}"
    );
    assert_eq!(report.failed_phase, Some(Phase::Quiesce));
}

#[tokio::test]
async fn wait_runs_after_resume_and_reports_the_snapshot() {
    let mut s = Setup::new(&["a"]);
    s.wait = true;
    let (report, log, phases) = s.run().await;
    assert!(log.ends_with(&["a.resume".into(), "provider.wait 42".into()]));
    assert_eq!(phases.last(), Some(&Phase::Wait));
    assert_eq!(report.snapshot_id.as_deref(), Some("snap-1"));
}

#[tokio::test]
async fn filesystems_without_freeze_support_are_reported_as_skipped() {
    let mut s = Setup::new(&[]);
    s.fs.not_supported = vec![target("/boot/efi")];
    s.fs.targets.push(target("/boot/efi"));
    let (report, log, _) = s.run().await;
    assert!(log.contains(&"provider.request snap 2".to_string()));
    assert_eq!(
        report.filesystems.skipped[0].reason,
        SkipReason::FreezeNotSupported
    );
}

#[test]
fn the_margin_is_a_tenth_within_bounds() {
    assert_eq!(
        deadline_margin(Duration::from_secs(1)),
        Duration::from_millis(100)
    );
    assert_eq!(deadline_margin(Duration::from_secs(20)), Duration::from_secs(1));
    assert_eq!(deadline_margin(Duration::from_secs(300)), Duration::from_secs(1));
}

fn template_name(host: &str) -> (SnapshotName, OwnNames) {
    let template: NameTemplate = crate::naming::DEFAULT_TEMPLATE.parse().unwrap();
    (
        SnapshotName::Template {
            template: template.clone(),
            host: host.into(),
            at: UNIX_EPOCH + Duration::from_secs(1_795_823_461),
            group: None,
        },
        OwnNames {
            template,
            host: host.into(),
        },
    )
}

#[tokio::test]
async fn a_templated_name_records_the_consistency_reached() {
    let mut s = Setup::new(&["db"]);
    s.name = template_name("web-1").0;
    let (report, log, _) = s.run().await;
    assert!(
        log.contains(&"provider.request web-1-20261127-235101-application 2".to_string()),
        "{log:?}"
    );
    assert_eq!(report.snapshot_name, "web-1-20261127-235101-application");

    let mut s = Setup::new(&["db"]);
    s.name = template_name("web-1").0;
    s.policy = QuiescePolicy::Continue;
    s.quiescers[0].prepare = Behaviour::Fails;
    let (report, _, _) = s.run().await;
    assert_eq!(report.snapshot_name, "web-1-20261127-235101-filesystem");
    assert_eq!(report.consistency, Some(Consistency::Filesystem));
}

#[tokio::test]
async fn a_limit_learned_in_preflight_caps_the_name_the_markers_and_the_report() {
    let mut s = Setup::new(&["db"]);
    s.name = template_name("web-1").0;
    s.provider.limit = Some(ClaimLimit {
        at_most: Consistency::Crash,
        why: "this platform reads disks after the thaw".into(),
    });
    let marks = s.fs.marks.clone();
    let (report, _, _) = s.run().await;
    assert_eq!(report.snapshot_name, "web-1-20261127-235101-crash");
    assert_eq!(report.consistency, Some(Consistency::Crash));
    assert!(
        report.warnings.iter().any(|w| w.contains("after the thaw")),
        "{report:?}"
    );
    let marks = marks.lock().unwrap().clone();
    assert_eq!(
        marks,
        [
            "web-1-20261127-235101-crash before crash",
            "web-1-20261127-235101-crash after crash"
        ],
        "the markers claim no more"
    );

    // A limit above what the run reaches changes nothing, and says nothing.
    let mut s = Setup::new(&[]);
    s.provider.limit = Some(ClaimLimit {
        at_most: Consistency::Application,
        why: "never shown".into(),
    });
    let (report, _, _) = s.run().await;
    assert_eq!(report.consistency, Some(Consistency::Filesystem));
    assert!(report.warnings.is_empty(), "{report:?}");
}

#[tokio::test]
async fn retention_prunes_only_after_completion_and_only_our_names() {
    let (name, ours) = template_name("web-1");
    let mut s = Setup::new(&[]);
    s.name = name.clone();
    s.wait = true;
    s.retention = Some(Retention {
        keep_last: 2,
        ours: Arc::new(ours.clone()),
    });
    s.provider.existing = vec![
        "web-1-20261101-000000-filesystem".into(),
        "manual-backup".into(),
        "web-2-20261101-000000-filesystem".into(),
        "web-1-20261102-000000-application".into(),
        "web-1-20261127-235101-filesystem".into(),
    ];
    let (report, log, phases) = s.run().await;
    assert!(
        log.ends_with(&["provider.wait 42".into(), "provider.prune 2".into()]),
        "{log:?}"
    );
    assert_eq!(phases.last(), Some(&Phase::Prune));
    let pruned: Vec<&str> = report.pruned.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pruned, ["web-1-20261101-000000-filesystem"]);

    // Without --wait nothing is deleted, and the report says why.
    let mut s = Setup::new(&[]);
    s.retention = Some(Retention {
        keep_last: 1,
        ours: Arc::new(ours.clone()),
    });
    let (report, log, _) = s.run().await;
    assert!(!log.iter().any(|e| e.starts_with("provider.prune")));
    assert!(report.warnings[0].contains("--wait"), "{:?}", report.warnings);

    // A failed snapshot never prunes.
    let mut s = Setup::new(&[]);
    s.wait = true;
    s.provider.request = Behaviour::Fails;
    s.retention = Some(Retention {
        keep_last: 1,
        ours: Arc::new(ours),
    });
    let (_, log, _) = s.run().await;
    assert!(!log.iter().any(|e| e.starts_with("provider.prune")));
}

#[tokio::test]
async fn a_failed_prune_fails_the_run_but_keeps_the_snapshot() {
    let (name, ours) = template_name("web-1");
    let mut s = Setup::new(&[]);
    s.name = name;
    s.wait = true;
    s.provider.prune = Behaviour::Fails;
    s.retention = Some(Retention {
        keep_last: 1,
        ours: Arc::new(ours),
    });
    let (report, _, _) = s.run().await;
    assert_eq!(report.failed_phase, Some(Phase::Prune));
    assert_eq!(report.snapshot_id.as_deref(), Some("snap-1"));
    assert!(report.error.unwrap().contains("retention failed: HTTP 403"));
}

#[tokio::test]
async fn a_provider_not_ready_before_the_freeze_freezes_nothing_and_resumes() {
    let mut s = Setup::new(&["a"]);
    s.provider.ready = Behaviour::Fails;
    let (report, log, _) = s.run().await;
    assert!(
        log.ends_with(&["provider.ready".into(), "a.resume".into()]),
        "{log:?}"
    );
    assert!(!log.contains(&"fs.freeze".to_string()));
    assert_eq!(report.failed_phase, Some(Phase::Sync));
    assert!(report
        .error
        .unwrap()
        .contains("fake provider: connection refused"));
}

#[tokio::test]
async fn when_no_filesystem_can_freeze_nothing_is_requested() {
    let mut s = Setup::new(&["a"]);
    s.fs.not_supported = s.fs.targets.clone();
    let (report, log, _) = s.run().await;
    assert!(!log.iter().any(|e| e.starts_with("provider.request")), "{log:?}");
    assert_eq!(log.last().unwrap(), "a.resume");
    assert_eq!(report.failed_phase, Some(Phase::Freeze));
    assert!(report.error.unwrap().contains("no filesystem could be frozen"));
}

#[tokio::test(start_paused = true)]
async fn the_agents_deadline_counts_from_when_the_guard_was_armed() {
    let mut s = Setup::new(&[]);
    s.provider.request = Behaviour::Hangs;
    s.fs.armed_before_freeze = Some(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let (report, _, _) = s.run().await;
    // max_freeze 2 s, margin 200 ms, 300 ms already spent freezing: 1.5 s are left.
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_millis(1500) && waited > Duration::from_millis(1400),
        "{waited:?}"
    );
    assert_eq!(report.failed_phase, Some(Phase::Request));
}

#[tokio::test]
async fn an_application_no_quiescer_handles_caps_consistency_at_filesystem() {
    let mut setup = Setup::new(&["db"]);
    setup.unquiesced = vec!["mongod.service (mongodb): no native quiescer".into()];
    let (report, log, _) = setup.run().await;
    assert_eq!(report.status, Status::Succeeded, "{report:?}");
    assert_eq!(report.consistency, Some(Consistency::Filesystem));
    assert!(
        report.warnings[0].contains("not quiesced: mongod.service"),
        "{:?}",
        report.warnings
    );
    assert!(
        log.contains(&"db.prepare".to_string()),
        "the others are still quiesced: {log:?}"
    );
}

#[tokio::test]
async fn a_group_member_waits_flushed_and_frozen_for_its_coordinator() {
    let (report, log, phases) = Setup::member(&["db"], Behaviour::Works, Behaviour::Works)
        .run()
        .await;
    assert_eq!(report.status, Status::Succeeded, "{:?}", report.error);
    let at = |e: &str| {
        log.iter()
            .position(|l| l == e)
            .unwrap_or_else(|| panic!("{e}: {log:?}"))
    };
    assert!(
        at("provider.ready") < at("barrier.Synced"),
        "flushed before it says ready"
    );
    assert!(at("barrier.Synced") < at("fs.freeze") && at("fs.freeze") < at("barrier.Frozen"));
    assert!(
        at("barrier.Frozen") < at("provider.request snap 2") && at("provider.request snap 2") < at("fs.thaw")
    );
    assert!(at("fs.thaw") < at("db.resume"));
    let ready = phases.iter().position(|p| *p == Phase::Ready).unwrap();
    assert_eq!(phases[ready - 1], Phase::Sync);
    assert_eq!(phases[ready + 1], Phase::Freeze);
    assert_eq!(phases[ready + 2], Phase::Hold);
    assert_eq!(phases[ready + 3], Phase::Request);
    let group = report.group.unwrap();
    assert_eq!(group.id, "g0000abcd");
    assert!(group.commit_to_thaw_ms.is_some());
    assert_eq!(report.consistency, Some(Consistency::Application));
}

#[tokio::test]
async fn a_group_member_aborted_while_frozen_thaws_resumes_and_requests_nothing() {
    let s = Setup::member(&["db"], Behaviour::Works, Behaviour::Hangs);
    let log = s.log.clone();
    let (stop, interrupt) = Interrupt::new();
    let mut s = s;
    s.interrupt = interrupt;
    let run = tokio::spawn(s.run());
    while !log.lock().unwrap().iter().any(|e| e == "barrier.Frozen") {
        tokio::task::yield_now().await;
    }
    stop.stop("aborted by the group's coordinator: member b failed");
    let (report, log, _) = run.await.unwrap();
    assert!(log.ends_with(&["fs.thaw".into(), "db.resume".into()]), "{log:?}");
    assert!(!log.iter().any(|e| e.starts_with("provider.request")), "{log:?}");
    assert_eq!(report.failed_phase, Some(Phase::Hold));
    let error = report.error.unwrap();
    assert!(
        error.contains("member b failed") && error.contains("no snapshot was requested"),
        "{error}"
    );
    assert_eq!(report.consistency, None, "nothing was requested");
    assert_eq!(report.group.unwrap().commit_to_thaw_ms, None);
}

#[tokio::test]
async fn a_group_member_whose_commit_never_comes_thaws_before_max_freeze() {
    let (report, log, _) = Setup::member(&["db"], Behaviour::Works, Behaviour::Hangs)
        .run()
        .await;
    assert!(log.ends_with(&["fs.thaw".into(), "db.resume".into()]), "{log:?}");
    assert!(!log.iter().any(|e| e.starts_with("provider.request")), "{log:?}");
    assert_eq!(report.failed_phase, Some(Phase::Hold));
    assert!(report.error.unwrap().contains("did not come within max_freeze"));
    let held = report.group.unwrap().held_ms;
    assert!(held < 2000.0, "held {held} ms, max_freeze is 2 s");
}

#[tokio::test]
async fn a_group_member_not_told_to_freeze_resumes_and_freezes_nothing() {
    for (synced, interrupt) in [(Behaviour::Fails, false), (Behaviour::Hangs, true)] {
        let s = Setup::member(&["db"], synced, Behaviour::Works);
        let log = s.log.clone();
        let (stop, signal) = Interrupt::new();
        let mut s = s;
        s.interrupt = signal;
        let run = tokio::spawn(s.run());
        if interrupt {
            while !log.lock().unwrap().iter().any(|e| e == "barrier.Synced") {
                tokio::task::yield_now().await;
            }
            stop.stop("the group's coordinator left the bus");
        }
        let (report, log, _) = run.await.unwrap();
        assert!(!log.iter().any(|e| e == "fs.freeze"), "{log:?}");
        assert!(log.ends_with(&["db.resume".into()]), "{log:?}");
        assert_eq!(report.failed_phase, Some(Phase::Ready));
        let error = report.error.unwrap();
        assert!(
            error.contains(if interrupt {
                "left the bus"
            } else {
                "did not come by its prepare deadline"
            }),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_guard_acting_while_a_member_holds_ends_it_without_a_request() {
    let mut s = Setup::member(&["db"], Behaviour::Works, Behaviour::Hangs);
    s.fs.guard = Some((Duration::from_millis(10), GuardEvent::Died));
    let (report, log, _) = s.run().await;
    assert!(!log.iter().any(|e| e.starts_with("provider.request")), "{log:?}");
    assert_eq!(report.failed_phase, Some(Phase::Hold));
    assert!(report.error.unwrap().contains("thaw guard"));
}
