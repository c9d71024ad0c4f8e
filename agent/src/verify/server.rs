//! A database server started for the length of one check (from an image: in its sandbox, see
//! sandbox.rs), logging to a file of ours, killed with `verify` if `verify` dies
//! (PR_SET_PDEATHSIG), at its hard time limit (`Watchdog`), and stopped on drop. The checks'
//! clients run through `output`, under the same limit.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) use super::sandbox::LIFETIME;

/// How long a server may take to recover and accept connections. Recovery replays what was
/// written since the last checkpoint, which on a busy database can take minutes.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// An account of this machine that a running server's clients run as (peer authentication).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Owner {
    /// Runs `command` as this account, from `/`: the caller's working directory (root's home
    /// over ssh, a 0700 folder) may be closed to it, and psql says so on the output it is read by.
    pub(crate) fn apply<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.uid(self.uid).gid(self.gid).current_dir("/")
    }
}

/// A client that could not be run, or a server that did not come up: what the check records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    /// The program could not be started (not installed?).
    #[error("cannot {verb} {program} (is it installed?): {source}")]
    NotStarted {
        /// `run` for a client, `start` for a server.
        verb: &'static str,
        program: String,
        source: std::io::Error,
    },
    /// Its output could not be read to its end.
    #[error("cannot run {program}: {source}")]
    Output { program: String, source: std::io::Error },
    /// The server's log file could not be made.
    #[error("cannot create {}: {source}", log.display())]
    Log { log: PathBuf, source: std::io::Error },
    /// The server exited before it accepted connections: its last words.
    #[error("the server exited ({status}) instead of starting: {last_words}")]
    Exited {
        status: std::process::ExitStatus,
        last_words: String,
    },
    /// The server did not accept connections within `START_TIMEOUT`.
    #[error("the server did not accept connections within {} s: {last_words}", START_TIMEOUT.as_secs())]
    NotReady { last_words: String },
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

/// Runs a client to its end: whether it succeeded, and everything it printed. It is killed if
/// it outlives `LIFETIME`.
pub(crate) fn output(command: &mut Command) -> Result<(bool, String), ServerError> {
    output_from(command, Stdio::null())
}

/// The same, reading `stdin`.
pub(crate) fn output_from(command: &mut Command, stdin: Stdio) -> Result<(bool, String), ServerError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ServerError::NotStarted {
            verb: "run",
            program: program.clone(),
            source,
        })?;
    let watchdog = Watchdog::arm(&child, LIFETIME);
    let out = child
        .wait_with_output()
        .map_err(|source| ServerError::Output { program, source })?;
    drop(watchdog);
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
    /// Kills it at its hard time limit.
    #[allow(dead_code)]
    watchdog: Option<Watchdog>,
}

impl Server {
    /// Starts `command` with its output in `log`.
    pub(crate) fn start(mut command: Command, log: &Path) -> Result<Server, ServerError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let log_error = |source| ServerError::Log {
            log: log.to_path_buf(),
            source,
        };
        let file = File::create(log).map_err(log_error)?;
        let err = file.try_clone().map_err(log_error)?;
        command.stdin(Stdio::null()).stdout(file).stderr(err);
        // SAFETY: the closure runs between fork and exec and calls only prctl, which is
        // async-signal-safe, on no shared state.
        unsafe {
            command.pre_exec(|| {
                // verify forks only from its main thread (its watchdogs never fork), so the
                // parent this follows is verify itself.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| ServerError::NotStarted {
            verb: "start",
            program,
            source,
        })?;
        Ok(Server {
            watchdog: Watchdog::arm(&child, LIFETIME),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits until `ready` says so; how long that took. Fails with the server's last words when
    /// it exits first, or when `START_TIMEOUT` passes.
    pub(crate) fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<Duration, ServerError> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(started.elapsed());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ServerError::Exited {
                        status,
                        last_words: self.last_words(),
                    });
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(ServerError::NotReady {
                    last_words: self.last_words(),
                });
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

/// Kills a process when its time limit passes, through a pidfd (never another process that
/// reused its pid); disarmed on drop.
#[derive(Debug)]
pub(crate) struct Watchdog {
    cancel: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Watches `child` (not yet waited for); none if the kernel has no pidfd.
    pub(crate) fn arm(child: &Child, limit: Duration) -> Option<Watchdog> {
        // The child is ours and not yet reaped, so the pid is still its own.
        let process = super::sandbox::PidFd::open(child.id() as libc::pid_t)?;
        let (cancel, cancelled) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = cancelled.recv_timeout(limit) {
                process.kill();
            }
        });
        Some(Watchdog {
            cancel: Some(cancel),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.cancel.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_past_its_time_limit_is_killed() {
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        let watchdog = Watchdog::arm(&child, Duration::from_millis(100)).unwrap();
        let status = child.wait().unwrap();
        drop(watchdog);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
