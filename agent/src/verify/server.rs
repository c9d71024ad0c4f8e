//! A database server started from a restored image for the length of one check: as the owner
//! of its data, logging to a file of ours, killed with `verify` if `verify` dies
//! (PR_SET_PDEATHSIG) and stopped on drop. The checks' clients run through `output`.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to recover and accept connections. Recovery replays what was
/// written since the last checkpoint, which on a busy database can take minutes.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Who owns a data directory: the server runs as them (PostgreSQL refuses anyone else).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Owner {
    pub(crate) fn of(path: &Path) -> Result<Owner, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    /// Runs `command` as this owner, from `/`: the caller's working directory (root's home over
    /// ssh, a 0700 folder) may be closed to it, and psql says so on the output it is read by.
    pub(crate) fn apply<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.uid(self.uid).gid(self.gid).current_dir("/")
    }

    /// A folder of ours (sockets, logs) that the owner may use and nobody else.
    pub(crate) fn private_dir(&self, path: &Path) -> Result<PathBuf, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path)
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .map_err(|e| format!("cannot give {} to uid {}: {e}", path.display(), self.uid))?;
        Ok(path.to_path_buf())
    }
}

/// Polls `ready` until it says so, up to `bound`; whether it did.
pub(crate) fn wait_until(bound: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > bound {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Runs a client to its end: whether it succeeded, and everything it printed.
pub(crate) fn output(command: &mut Command) -> Result<(bool, String), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program} (is it installed?): {e}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// A server process; killed on drop if it was not stopped.
#[derive(Debug)]
pub(crate) struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `command` with its output in `log`.
    pub(crate) fn start(mut command: Command, log: &Path) -> Result<Server, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let file = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        command.stdin(Stdio::null()).stdout(file).stderr(err);
        // SAFETY: the closure runs between fork and exec and calls only prctl, which is
        // async-signal-safe, on no shared state.
        unsafe {
            command.pre_exec(|| {
                // verify is single-threaded, so the parent this follows is verify itself.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program} (is it installed?): {e}"))?;
        Ok(Server {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits until `ready` says so; how long that took. Fails with the server's last words when
    /// it exits first, or when `START_TIMEOUT` passes.
    pub(crate) fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(started.elapsed());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "the server exited ({status}) instead of starting: {}",
                        self.last_words()
                    ));
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the server did not accept connections within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    self.last_words()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines of its log that say what went wrong (or its last lines).
    pub(crate) fn last_words(&self) -> String {
        let log = self.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["FATAL", "PANIC", "ERROR", "[ERROR]", "# "]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        let lines: Vec<&str> = if bad.is_empty() {
            log.lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        } else {
            bad.into_iter().take(8).collect()
        };
        lines.join(" | ")
    }

    /// Asks the server to stop (SIGTERM: a clean shutdown for all three), and kills it if it
    /// has not within a minute.
    pub(crate) fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
