//! A filesystem image on a loop device, mounted, that thaws (in case), unmounts and detaches
//! itself on drop, even when the caller failed half-way. The doctor's freeze self-test makes
//! one; the demo and the tests build their scratch filesystems on it. Only images made for the
//! purpose are ever attached: nothing here looks at the machine's own mounts.

use crate::kernel::sys;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An image attached and mounted; detached on drop.
#[derive(Debug)]
pub struct LoopMount {
    device: String,
    mountpoint: PathBuf,
    mounted: bool,
}

/// Why an image could not be attached and mounted.
#[derive(Debug, thiserror::Error)]
pub enum LoopMountError {
    /// The mountpoint could not be made.
    #[error("cannot create {}: {source}", mountpoint.display())]
    Mountpoint {
        /// The mountpoint asked for.
        mountpoint: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `losetup`, `mount` or `umount` did not run at all (not installed?).
    #[error("cannot run {program}: {source}")]
    NotRun {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran and failed: what it said.
    #[error("{program} {args} failed: {said}")]
    Failed {
        /// The program.
        program: String,
        /// Its arguments, joined with spaces.
        args: String,
        /// Its standard error, trimmed.
        said: String,
    },
}

/// How to attach an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attach<'a> {
    /// The loop device read-only, so not one byte of the image can change.
    pub read_only: bool,
    /// Mount options, as `mount -o` takes them.
    pub options: Option<&'a str>,
}

impl LoopMount {
    /// Attaches `image` to a free loop device and mounts it at `mountpoint` (made if needed).
    pub fn attach(image: &Path, mountpoint: &Path, how: Attach<'_>) -> Result<LoopMount, LoopMountError> {
        std::fs::create_dir_all(mountpoint).map_err(|source| LoopMountError::Mountpoint {
            mountpoint: mountpoint.to_path_buf(),
            source,
        })?;
        let image = image.to_string_lossy();
        let mut losetup = vec!["--find", "--show"];
        if how.read_only {
            losetup.push("--read-only");
        }
        losetup.push(&image);
        let mut attached = LoopMount {
            device: run("losetup", &losetup)?,
            mountpoint: mountpoint.to_path_buf(),
            mounted: false,
        };
        let target = mountpoint.to_string_lossy();
        let mut mount = Vec::new();
        if let Some(options) = how.options {
            mount.extend(["-o", options]);
        }
        mount.extend([attached.device.as_str(), &target]);
        run("mount", &mount)?;
        attached.mounted = true;
        Ok(attached)
    }

    /// The loop device, such as `/dev/loop3`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted {
            // A test or demo that failed while frozen must not leave the filesystem frozen.
            if let Ok(fd) = sys::open_mountpoint(&self.mountpoint) {
                let _ = sys::thaw(&fd);
            }
            let mountpoint = self.mountpoint.to_string_lossy().into_owned();
            let unmounted = (0..20).any(|_| {
                let done = run("umount", &[&mountpoint]).is_ok();
                if !done {
                    std::thread::sleep(Duration::from_millis(100));
                }
                done
            });
            if !unmounted {
                let _ = run("umount", &["--lazy", &mountpoint]);
            }
        }
        let _ = run("losetup", &["--detach", &self.device]);
    }
}

/// Runs a program; its trimmed stdout, or what it said on failure.
fn run(program: &str, args: &[&str]) -> Result<String, LoopMountError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LoopMountError::NotRun {
            program: program.to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(LoopMountError::Failed {
            program: program.to_string(),
            args: args.join(" "),
            said: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
