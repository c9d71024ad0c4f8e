//! Quiescers: what brings applications to a consistent state on disk before the freeze, and
//! back afterwards. The transaction calls `prepare` in order and, for every `prepare` that
//! started, `resume` in reverse order, whatever fails; a quiescer never resumes itself.

pub mod assembly;
pub mod auto;
pub mod hooks;
pub mod mysql;
pub mod owed;
pub mod pending;
pub mod postgres;
pub mod process_group;
pub mod redis;
pub mod systemd_unit;

use crate::transaction::ports::{QuiesceError, Target};

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
