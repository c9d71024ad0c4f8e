//! The snapshot transaction's ports: the three sides it drives (filesystems, quiescers, the
//! provider) as traits, and the plain types they exchange. The transaction imports only this;
//! `freeze/`, `quiesce/` and `provider/` implement it, and the one-shot command and the service
//! plug the implementations in. So this module imports nothing else of the crate. The values
//! that also cross the bus (a target, a consistency level, a pruned snapshot, …) are the
//! contract's (`freezeframe_contract`), and are re-exported here as the ports exchange them.

pub use freezeframe_contract::{
    ApiBudget, Consistency, DevNum, GuardEvent, LogPosition, Pruned, SkipReason, Skipped, Target,
    VolumeSnapshotRef,
};
// What provider/digitalocean records on and reads from snapshots: the contract's too, since
// `ListSnapshots` carries them; not values the transaction exchanges.
pub(crate) use freezeframe_contract::{DrillResult, RecordedConsistency};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

// ---- Filesystems ----

/// Why the filesystems could not be checked, flushed or frozen, with the cause chain. When a
/// freeze fails, nothing that this run froze is frozen any more.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct FilesystemsError(Box<dyn std::error::Error + Send + Sync>);

impl FilesystemsError {
    pub(crate) fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        FilesystemsError(Box::new(error))
    }
}

/// What retention did: the snapshots it deleted, and how many of this machine's it kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retained {
    /// The snapshots deleted.
    pub pruned: Vec<Pruned>,
    /// This machine's snapshots left.
    pub kept: usize,
}

/// When a snapshot-point marker is written: `Before` the freeze (so every image of the snapshot
/// holds it) or right `After` the thaw (so only an image read after the thaw holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMoment {
    /// Written and synced before the freeze.
    Before,
    /// Written and synced right after the thaw.
    After,
}

impl ProbeMoment {
    /// Both, in the order they are written.
    pub const ALL: [ProbeMoment; 2] = [ProbeMoment::Before, ProbeMoment::After];

    /// `before` or `after`, as in marker names.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMoment::Before => "before",
            ProbeMoment::After => "after",
        }
    }
}

/// What `freeze` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreezeOutcome {
    /// Frozen, in freeze order.
    pub frozen: Vec<Target>,
    /// Answered FIFREEZE with EOPNOTSUPP: skipped, not fatal.
    pub not_supported: Vec<Target>,
    /// When the thaw guard's clock started: the agent's own deadline counts from here, so it
    /// always comes before the guard's, however long freezing took.
    pub guard_armed_at: Option<Instant>,
    /// First FIFREEZE to the return of the last: the part of the window spent freezing.
    pub freezing: Duration,
}

/// What `thaw` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThawReport {
    /// First FIFREEZE to last FITHAW.
    pub frozen_for: Duration,
    /// First FITHAW to the return of the last: the part of the window spent thawing.
    pub thawing: Duration,
    /// Set if the guard had acted on its own before the thaw.
    pub guard_event: Option<GuardEvent>,
    /// Filesystems that could not be thawed (the guard retries them).
    pub errors: Vec<String>,
}

/// The filesystems side of the transaction.
#[async_trait::async_trait]
pub trait Filesystems: Send {
    /// The targets, in freeze order.
    fn targets(&self) -> &[Target];
    /// Opens and checks every target. Changes nothing.
    fn preflight(&mut self) -> Result<(), FilesystemsError>;
    /// Flushes every target, outside the frozen window.
    async fn sync(&mut self) -> Result<(), FilesystemsError>;
    /// Arms the thaw guard and freezes every target in order. On error nothing stays frozen.
    fn freeze(&mut self, max_freeze: Duration) -> Result<FreezeOutcome, FilesystemsError>;
    /// Resolves when the guard acts on its own (deadline thaw, death); pending while not frozen.
    async fn guard_tripped(&mut self) -> GuardEvent;
    /// Thaws in reverse order and disarms the guard. Does nothing if nothing is frozen.
    fn thaw(&mut self) -> ThawReport;
    /// Leaves the snapshot-point marker of `snapshot` at `moment`, holding `record`, on each
    /// target that takes one (never while frozen); returns what could not be marked, as
    /// warnings.
    fn mark(&mut self, snapshot: &str, moment: ProbeMoment, record: &MarkerRecord) -> Vec<String> {
        let _ = (snapshot, moment, record);
        Vec::new()
    }
}

// ---- Quiescers ----

/// What a snapshot-point marker records of the run, for `verify` to hold a restore to: the
/// consistency it claims, where each database's log stood, and how each quiesced database is
/// reached (so a restored machine checks the same ones, detected or configured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerRecord {
    /// The consistency the run aims at, as in the snapshot's name.
    pub consistency: Consistency,
    /// Where each quiesced database's log stood, which a restore must replay to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_positions: Vec<LogPosition>,
    /// How each quiesced database is reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseEndpoint>,
}

/// How a quiesced database is reached: no secret, only where a password file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DatabaseEndpoint {
    /// PostgreSQL, through psql as `os_user`.
    Postgresql {
        /// The folder of its socket.
        socket_dir: PathBuf,
        /// Its port (the socket's name).
        port: u16,
        /// The OS user psql runs as (peer authentication).
        os_user: String,
    },
    /// MariaDB or MySQL, over its socket.
    Mariadb {
        /// Its socket.
        socket: PathBuf,
        /// The user logged in as.
        user: String,
        /// The file holding that user's password, if it needs one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
    },
    /// Redis, over a socket or TCP.
    Redis {
        /// Its socket, or
        #[serde(default, skip_serializing_if = "Option::is_none")]
        socket: Option<PathBuf>,
        /// its `host:port`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        /// The file holding its `requirepass` password, if it needs one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
    },
}

/// Default bound on one `prepare` or `resume`.
pub(crate) const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a quiescer's check, prepare or resume failed: what failed, in words for the user, and
/// the error under it (a program that would not start, the database's socket, systemd), kept
/// as the error's source so that reports and logs carry the whole chain. The transaction
/// names the quiescer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct QuiesceError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl QuiesceError {
    /// A failure with no error under it (a database's answer, a hook's exit status).
    pub fn new(message: impl Into<String>) -> Self {
        QuiesceError {
            message: message.into(),
            source: None,
        }
    }

    /// `message` (what was being done), caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        QuiesceError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// `source` itself as the failure (it says what failed), its own causes kept.
    pub fn caused_by(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        QuiesceError {
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// What failed, without the causes.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What to do when a quiescer fails to prepare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuiescePolicy {
    /// Resume what was prepared and take no snapshot.
    #[default]
    Abort,
    /// Go on with a filesystem-consistent snapshot.
    Continue,
}

/// One application to quiesce.
#[async_trait::async_trait]
pub trait Quiescer: Send {
    /// A short name for reports, such as `postgresql@15-main`.
    fn name(&self) -> &str;
    /// How long `prepare` may take before it counts as failed.
    fn prepare_timeout(&self) -> Duration {
        DEFAULT_STEP_TIMEOUT
    }
    /// How long `resume` may take before it counts as failed.
    fn resume_timeout(&self) -> Duration {
        DEFAULT_STEP_TIMEOUT
    }
    /// What the report should record about the last prepare (a binary log position).
    fn details(&self) -> Option<String> {
        None
    }
    /// Where the database's write-ahead log stood after the last prepare, when it tells.
    fn log_position(&self) -> Option<LogPosition> {
        None
    }
    /// How the database is reached, when this quiesces one.
    fn endpoint(&self) -> Option<DatabaseEndpoint> {
        None
    }
    /// What the last `check` found that does not stop the run but belongs in the report's
    /// warnings (a hook passed over).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Preflight: everything that can be checked without touching the application, such as
    /// whether its data sits on the filesystems about to be frozen.
    async fn check(&mut self, targets: &[Target]) -> Result<(), QuiesceError>;
    /// Brings the application to a consistent state on disk.
    async fn prepare(&mut self) -> Result<(), QuiesceError>;
    /// Undoes `prepare`. Called even if `prepare` failed or timed out part-way.
    async fn resume(&mut self) -> Result<(), QuiesceError>;
}

// ---- The provider ----

/// A provider's failure, with the cause chain kept for the report.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The fault is in this machine's set-up (a token file open to others, a missing token):
    /// the user must change something before any retry can succeed.
    setup: bool,
    /// What to do about it, where the provider knows (`doctor` shows it).
    fix: Option<String>,
}

impl ProviderError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            source: None,
            setup: false,
            fix: None,
        }
    }

    /// A failure of the machine's set-up, which no retry mends (see [`Self::is_setup`]).
    pub(crate) fn setup(message: impl Into<String>) -> Self {
        ProviderError {
            setup: true,
            ..ProviderError::new(message)
        }
    }

    /// The same failure, found to be the machine's set-up (see [`Self::is_setup`]).
    pub(crate) fn into_setup(self) -> Self {
        ProviderError { setup: true, ..self }
    }

    pub(crate) fn is_setup(&self) -> bool {
        self.setup
    }

    /// Says what to do about this failure.
    pub(crate) fn with_fix(self, fix: impl Into<String>) -> Self {
        ProviderError {
            fix: Some(fix.into()),
            ..self
        }
    }

    pub(crate) fn fix(&self) -> Option<&str> {
        self.fix.as_deref()
    }
    /// A failure with its cause, kept for the report's cause chain.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ProviderError {
            message: message.into(),
            source: Some(Box::new(source)),
            setup: false,
            fix: None,
        }
    }
}

/// The provider accepted the request: from here the snapshot no longer needs the freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The provider's handle on the request (an action id, an image name).
    pub action_id: String,
    /// Whether the snapshot is already complete.
    pub completed: bool,
    /// Snapshots of attached volumes taken in the same window.
    pub volume_snapshots: Vec<VolumeSnapshotRef>,
    /// Where the snapshot is kept, when that is a place on this machine (a folder).
    pub location: Option<String>,
}

/// A restore drill the provider recorded on one of this machine's snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSeen {
    /// The snapshot it restored (its name).
    pub snapshot: String,
    /// Whether it verified.
    pub verified: bool,
    /// When it ran, in seconds since the Unix epoch.
    pub unix_seconds: u64,
}

/// A finished snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    /// The snapshot's id, when the provider tells it.
    pub snapshot_id: Option<String>,
    /// Its size, when the provider tells it.
    pub size_bytes: Option<u64>,
}

/// What a run achieved, recorded on its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The consistency it reached.
    pub consistency: Consistency,
    /// The consistency group it was part of.
    pub group: Option<String>,
}

/// What [`SnapshotProvider::reconcile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The request the provider did register, if it did.
    pub action_id: Option<String>,
    /// What to tell the user.
    pub note: String,
}

/// What a run's snapshot is called, asked once the consistency it reaches is known (`naming`
/// renders its templates behind this port).
pub trait SnapshotNamer: std::fmt::Debug + Send + Sync {
    /// The name for a snapshot of the given consistency.
    fn render(&self, consistency: Consistency) -> String;
}

/// Which snapshot names are this machine's own: all that retention may delete.
pub trait OwnedNames: std::fmt::Debug + Send + Sync {
    /// Whether this machine's template made `name`.
    fn is_ours(&self, name: &str) -> bool;
}

/// A bound on the consistency a run may claim, learned in preflight, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLimit {
    /// The most a snapshot of this run can be.
    pub at_most: Consistency,
    /// Why, with what to do: the report's warning.
    pub why: String,
}

/// What a run cost a rate-limited API, and what the API said was left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiUsage {
    /// Calls made.
    pub calls: u64,
    /// The budget left, as the API last told it.
    pub budget: Option<ApiBudget>,
}

/// Something that takes snapshots.
#[async_trait::async_trait]
pub trait SnapshotProvider: Send {
    /// The name used in configuration and reports.
    fn name(&self) -> &'static str;
    /// Checks, before anything is frozen, everything the request for snapshot `name` will need.
    async fn preflight(&mut self, name: &str, targets: &[Target]) -> Result<(), ProviderError>;
    /// What preflight learned that bounds what this run may claim (the platform reads its disks
    /// only after the thaw, say); `None` when nothing does.
    fn claim_limit(&self) -> Option<ClaimLimit> {
        None
    }
    /// Called right before the freeze (after quiesce and sync): last chance to make sure the
    /// request will not have to set anything up inside the window (a fresh connection).
    async fn ready(&mut self) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Asks for the snapshot. Runs inside the frozen window: no disk writes to targets, and it
    /// may be cancelled (dropped) at the deadline. `max_freeze` is the run's bound on the window
    /// (the transaction's own, the one the guard holds), for a provider's own time limits.
    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        max_freeze: Duration,
    ) -> Result<Registration, ProviderError>;
    /// How many calls this provider made to its API so far (for a rate-limited API, what a
    /// run costs its token), and what the API last said was left of its budget.
    fn usage(&self) -> ApiUsage {
        ApiUsage::default()
    }
    /// Waits, after the thaw, until the snapshot is complete.
    async fn wait_completed(&mut self, registration: &Registration) -> Result<Completion, ProviderError>;
    /// Records on the completed snapshot (and its volumes') what the run achieved, where the
    /// provider keeps such records (DigitalOcean: tags the control panel and `doctl` show).
    async fn label(
        &mut self,
        registration: &Registration,
        completion: &Completion,
        labels: &Labels,
    ) -> Result<(), ProviderError> {
        let _ = (registration, completion, labels);
        Ok(())
    }
    /// After a request that did not register (failed, timed out, or cut at the deadline), finds
    /// out, outside the window, whether the provider created a snapshot from it anyway. Never
    /// sends the request again: a retry could make a second snapshot.
    async fn reconcile(&mut self) -> Option<Reconciled> {
        None
    }
    /// Deletes all but the newest `keep_last` completed snapshots whose names `ours` accepts.
    /// Works outside a transaction too. With `dry_run` it deletes nothing and answers what it
    /// would delete: the same selection, so a dry run lists exactly what the real one deletes.
    async fn prune(
        &mut self,
        keep_last: usize,
        ours: &dyn OwnedNames,
        dry_run: bool,
    ) -> Result<Retained, ProviderError> {
        let _ = (keep_last, ours, dry_run);
        Err(ProviderError::new(format!(
            "the {} provider does not delete old snapshots",
            self.name()
        )))
    }
}

// ---- A consistency group's barrier ----

/// Where a member of a consistency group waits for the group's coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BarrierPoint {
    /// Quiesced and flushed, nothing frozen: waits for the word to freeze.
    Synced,
    /// Frozen: waits for the word to request the snapshot.
    Frozen,
}

/// Why a member of a group stopped waiting at the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// The coordinator's word to go on from the point did not come by its deadline.
    #[error("{}", match .0 {
        BarrierPoint::Synced => "the coordinator's word to freeze did not come by its prepare deadline",
        BarrierPoint::Frozen => "the coordinator's word to request the snapshot did not come by its deadline",
    })]
    Deadline(BarrierPoint),
}

/// A consistency group's barrier, as one member sees it: the run stops at each point until the
/// coordinator says go on. An abort comes as the run's interrupt (with its reason), and every
/// wait is raced against it, the deadline and the guard by the transaction.
#[async_trait::async_trait]
pub trait Barrier: Send {
    /// The group's id, for the snapshot's name and the report.
    fn group(&self) -> &str;
    /// The run is at `point`: called before the phase that waits there is announced, so a
    /// coordinator told of that phase finds the member waiting.
    fn arrived(&mut self, point: BarrierPoint);
    /// Returns when the coordinator says go on from `point`, or why the member gives up
    /// waiting (the coordinator's deadline passed).
    async fn released(&mut self, point: BarrierPoint) -> Result<(), BarrierError>;
    /// Adds to the member's report, as the run ends, what the group's side learned meanwhile
    /// (its coordinator leaving the bus).
    fn note(&self, report: &mut freezeframe_contract::Report) {
        let _ = report;
    }
}
