//! Quiescers: what brings applications to a consistent state on disk before the freeze, and
//! back afterwards. The transaction calls `prepare` in order and, for every `prepare` that
//! started, `resume` in reverse order, whatever fails; a quiescer never resumes itself.

pub mod assembly;
pub mod auto;
pub mod hooks;
pub mod mysql;
pub mod pending;
pub mod postgres;
pub mod process_group;
pub mod redis;
pub mod systemd_unit;

use crate::freeze::plan::Target;
use std::time::Duration;

/// Default bound on one `prepare` or `resume`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a quiescer's check, prepare or resume failed, in words for the user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct QuiesceError(pub String);

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

/// Refuses data (`what`, in `dir`) that the freeze would not cover: the snapshot would not be
/// consistent.
pub(crate) fn require_frozen(
    what: &str,
    dir: &std::path::Path,
    targets: &[Target],
) -> Result<(), QuiesceError> {
    match crate::freeze::target_holding(dir, targets) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(QuiesceError(format!(
            "{what} {} is not on a filesystem being frozen, so the snapshot would not be consistent; \
             add its mountpoint to `freeze.mountpoints`",
            dir.display()
        ))),
        Err(e) => Err(QuiesceError(format!(
            "cannot tell where {} is mounted: {e}",
            dir.display()
        ))),
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
