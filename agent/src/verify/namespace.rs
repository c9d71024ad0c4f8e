//! The private world `verify` works in: a mount namespace of its own, so that every mount it
//! makes (the image's view, the overlays the databases recover into, see sandbox.rs) is
//! invisible to the rest of the machine and goes away with the process, even one killed
//! outright.

use super::VerifyError;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Moves this process into a mount namespace of its own, whose mounts propagate nowhere.
/// Call it while the process still has one thread (the kernel refuses otherwise).
pub(crate) fn enter_private_mounts() -> Result<(), VerifyError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        VerifyError::Tool(format!(
            "cannot make a private mount namespace ({e}): verify mounts images, so it runs as root"
        ))
    })?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| VerifyError::Tool(format!("cannot make the mounts private: {e}")))
}
