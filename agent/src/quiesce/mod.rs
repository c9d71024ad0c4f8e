//! Quiescers: what brings applications to a consistent state on disk before the freeze, and
//! back afterwards. The transaction calls `prepare` in order and, for every `prepare` that
//! started, `resume` in reverse order, whatever fails; a quiescer never resumes itself.

pub(crate) mod assembly;
pub(crate) mod auto;
pub(crate) mod client;
pub(crate) mod container;
pub(crate) mod container_pause;
pub(crate) mod hooks;
pub(crate) mod mysql;
pub(crate) mod owed;
pub(crate) mod pending;
pub(crate) mod postgres;
pub(crate) mod process_group;
pub(crate) mod redis;
pub(crate) mod systemd_unit;

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
        Ok(None) => Err(QuiesceError::new(format!(
            "{what} {} is not on a filesystem being frozen, so the snapshot would not be consistent; \
             add its mountpoint to `freeze.mountpoints`",
            dir.display()
        ))),
        Err(e) => Err(QuiesceError::new(format!(
            "cannot tell where {} is mounted: {e}",
            dir.display()
        ))),
    }
}
