//! The private world `verify` works in: a mount namespace of its own, so that every mount it
//! makes (the image's view, the overlay the databases recover into) is invisible to the rest of
//! the machine and goes away with the process, even one killed outright; and the copy-on-write
//! overlay that lets a database replay its log from an image that must not change.

use super::VerifyError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::{Path, PathBuf};

/// Moves this process into a mount namespace of its own, whose mounts propagate nowhere.
/// Call it while the process still has one thread (the kernel refuses otherwise).
pub fn enter_private_mounts() -> Result<(), VerifyError> {
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

/// `lower` seen through an overlay whose writes land in `scratch`; unmounted on drop.
#[derive(Debug)]
pub(crate) struct Overlay {
    merged: PathBuf,
}

impl Overlay {
    /// Mounts the overlay at `scratch/merged`; `scratch` must be a folder of ours (its path
    /// goes into mount options, where a comma would split it).
    pub(crate) fn mount(lower: &Path, scratch: &Path) -> Result<Overlay, VerifyError> {
        let [upper, work, merged] = ["upper", "work", "merged"].map(|d| scratch.join(d));
        for dir in [&upper, &work, &merged] {
            std::fs::create_dir_all(dir)
                .map_err(|e| VerifyError::Tool(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| {
            VerifyError::Tool(format!(
                "cannot mount a copy-on-write overlay on the image ({e}): the databases need one \
                 to recover without changing it (is overlayfs in this kernel?)"
            ))
        })?;
        Ok(Overlay { merged })
    }

    /// The image as the databases see it: writable, every write discarded.
    pub(crate) fn path(&self) -> &Path {
        &self.merged
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Detached: a server that did not stop in time must not keep the image mounted.
        let _ = umount2(&self.merged, MntFlags::MNT_DETACH);
    }
}
