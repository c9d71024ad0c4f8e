//! Hook scripts, called the way QEMU guest agent calls `fsfreeze-hook.d` scripts, so existing
//! ones work unchanged: every executable in `hooks_dir` runs in name order with the argument
//! `freeze` before the freeze, and in reverse order with `thaw` after the thaw, for every hook
//! whose `freeze` ran. The directory and each hook must be owned by root and writable by no one
//! else: a hook runs as root, so anyone who can change one could run anything as root.

use super::pending::{self, Pending};
use super::process_group::{KillGroupOnDrop, ProcessGroup};
use super::{QuiesceError, Quiescer};
use crate::freeze::plan::Target;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hooks in one directory, as one quiescer.
pub struct HookDir {
    dir: PathBuf,
    timeout: Duration,
    hooks: Vec<PathBuf>,
    /// How many hooks' `freeze` started, in order: these get `thaw`.
    started: usize,
    /// Where each hook is recorded from its `freeze` until its `thaw` ([`super::pending`]).
    runtime_dir: Option<PathBuf>,
}

impl HookDir {
    pub fn new(dir: PathBuf, timeout: Duration) -> Self {
        HookDir {
            dir,
            timeout,
            hooks: Vec::new(),
            started: 0,
            runtime_dir: None,
        }
    }

    /// Records each hook in `runtime_dir` from its `freeze` until its `thaw`, so that a dead
    /// agent's hooks get their `thaw` from `freezeframe-agent thaw` or the next run.
    pub fn recorded_in(mut self, runtime_dir: Option<PathBuf>) -> Self {
        self.runtime_dir = runtime_dir;
        self
    }
}

/// Runs `thaw` for a hook a dead agent recorded, after the same ownership checks as discovery.
pub async fn thaw_recorded(hook: &Path, timeout: Duration) -> Result<(), QuiesceError> {
    let meta =
        std::fs::metadata(hook).map_err(|e| QuiesceError(format!("cannot read {}: {e}", hook.display())))?;
    if let Some(dir) = hook.parent() {
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| QuiesceError(format!("cannot read {}: {e}", dir.display())))?;
        check_owner(dir, &dir_meta)?;
    }
    check_owner(hook, &meta)?;
    run_hook(hook, "thaw", timeout, None).await.map(drop)
}

/// Names that are not hooks: samples, package manager leftovers, editor backups.
fn ignored(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".sample")
        || name.contains(".dpkg-")
        || name.ends_with('~')
        || name.ends_with(".ucf-old")
        || name.ends_with(".ucf-new")
}

/// Refuses what a non-root user could have changed.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), QuiesceError> {
    if meta.uid() != 0 {
        return Err(QuiesceError(format!(
            "{} is owned by uid {}, not root: a hook runs as root, so it must be root's \
             (chown root:root {})",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(QuiesceError(format!(
            "{} is writable by group or others (mode {:o}): run `chmod go-w {}`",
            path.display(),
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

/// The hooks in `dir`, in name order, after checking ownership and modes. A missing directory
/// has no hooks.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, QuiesceError> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QuiesceError(format!("cannot read {}: {e}", dir.display()))),
    };
    check_owner(dir, &meta)?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| QuiesceError(format!("cannot list {}: {e}", dir.display())))?;
    let mut hooks = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| QuiesceError(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        // Follow links: what runs is the target, so the target is what is checked.
        let meta = std::fs::metadata(&path)
            .map_err(|e| QuiesceError(format!("cannot read {}: {e}", path.display())))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            tracing::debug!("{} is not an executable file: not a hook", path.display());
            continue;
        }
        check_owner(&path, &meta)?;
        hooks.push(path);
    }
    hooks.sort();
    Ok(hooks)
}

/// Records in `runtime_dir` (when given) that `hook` is running in `group`, or no longer is.
fn record_running(runtime_dir: Option<&Path>, hook: &Path, running: Option<ProcessGroup>) {
    let Some(dir) = runtime_dir else { return };
    let entry = Pending::Hook {
        path: hook.to_path_buf(),
        running,
    };
    if let Err(e) = pending::add(dir, entry) {
        // The hook itself stays recorded (its `thaw` is still owed); only what it starts could
        // be missed by a resume for a dead agent.
        tracing::warn!(
            "cannot record hook {}'s process group in {}: {e}",
            hook.display(),
            dir.display()
        );
    }
}

/// Runs one hook with `arg`, bounded by `timeout`; returns its output, or why it failed. With a
/// `runtime_dir`, its process group is recorded there while it runs.
async fn run_hook(
    hook: &Path,
    arg: &str,
    timeout: Duration,
    runtime_dir: Option<&Path>,
) -> Result<String, QuiesceError> {
    let name = hook
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Its own process group: at the timeout the hook and everything it started are killed
    // (SIGKILL: a hook that ignores SIGTERM does not get to hang the run).
    let mut command = tokio::process::Command::new(hook);
    command
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let agent = nix::unistd::getpid().as_raw();
    // SAFETY: the closure runs between fork and exec and calls only prctl and getppid, both
    // async-signal-safe, on no shared state.
    unsafe {
        command.pre_exec(move || {
            // A hook must not outlive an agent killed mid-run: its `thaw` is run by whoever
            // resumes for the dead agent, and must not race a `freeze` still going. (The signal
            // follows the spawning thread: a runtime worker, which lives as long as the run.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != agent {
                // The agent is already gone. No allocation here (between fork and exec).
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| QuiesceError(format!("cannot run hook {name}: {e}")))?;
    let mut group = KillGroupOnDrop(child.id().map(|id| nix::unistd::Pid::from_raw(id as i32)));
    let running = child.id().and_then(ProcessGroup::led_by);
    if running.is_some() {
        record_running(runtime_dir, hook, running);
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if running.is_some() {
        record_running(runtime_dir, hook, None);
    }
    let out = match out {
        Err(_) => {
            drop(group);
            return Err(QuiesceError(format!(
                "hook {name} {arg} did not finish within {} and was killed, with everything it started",
                humantime::format_duration(timeout)
            )));
        }
        Ok(Err(e)) => return Err(QuiesceError(format!("cannot run hook {name}: {e}"))),
        Ok(Ok(out)) => out,
    };
    // It finished: what it left running in the background (a lock session held until `thaw`)
    // is its own business.
    group.0 = None;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string();
    if !text.is_empty() {
        tracing::info!(hook = %name, arg, "{text}");
    }
    if out.status.success() {
        Ok(text)
    } else {
        let tail: String = text
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" / ");
        Err(QuiesceError(format!(
            "hook {name} {arg} failed ({}){}",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        )))
    }
}

#[async_trait::async_trait]
impl Quiescer for HookDir {
    fn name(&self) -> &str {
        "hooks"
    }

    fn prepare_timeout(&self) -> Duration {
        // Each hook has its own bound; this one only backs them up.
        self.timeout * (self.hooks.len() as u32 + 1)
    }

    fn resume_timeout(&self) -> Duration {
        self.timeout * (self.hooks.len() as u32 + 1)
    }

    async fn check(&mut self, _targets: &[Target]) -> Result<(), QuiesceError> {
        self.hooks = discover(&self.dir)?;
        self.started = 0;
        if !self.hooks.is_empty() {
            let names: Vec<String> = self
                .hooks
                .iter()
                .filter_map(|h| h.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            tracing::debug!("hooks in {}: {}", self.dir.display(), names.join(", "));
        }
        Ok(())
    }

    async fn prepare(&mut self) -> Result<(), QuiesceError> {
        for (i, hook) in self.hooks.iter().enumerate() {
            if let Some(dir) = &self.runtime_dir {
                pending::add(dir, Pending::hook(hook.clone())).map_err(|e| {
                    QuiesceError(format!(
                        "cannot record hook {} in {}: {e}",
                        hook.display(),
                        dir.display()
                    ))
                })?;
            }
            self.started = i + 1;
            run_hook(hook, "freeze", self.timeout, self.runtime_dir.as_deref()).await?;
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        let mut failures = Vec::new();
        for hook in self.hooks[..self.started].iter().rev() {
            if let Err(e) = run_hook(hook, "thaw", self.timeout, self.runtime_dir.as_deref()).await {
                failures.push(e.0);
            }
            // Its `thaw` ran; a failure is this run's to report, not one to repeat later.
            if let Some(dir) = &self.runtime_dir {
                let _ = pending::remove(dir, &Pending::hook(hook.clone()));
            }
        }
        self.started = 0;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(QuiesceError(failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hook(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn samples_backups_and_non_executables_are_not_hooks() {
        let d = dir();
        hook(d.path(), "20-app", "true");
        hook(d.path(), "10-db", "true");
        hook(d.path(), "30-x.sample", "true");
        hook(d.path(), "40-y.dpkg-old", "true");
        hook(d.path(), "50-z~", "true");
        std::fs::write(d.path().join("60-readme"), "not executable").unwrap();
        let names: Vec<String> = discover(d.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-db", "20-app"], "as root, the files here are root's");
        assert!(discover(&d.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn a_hook_writable_by_others_is_refused() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "ownership checks need root: run the tests as root"
        );
        let d = dir();
        let h = hook(d.path(), "10-db", "true");
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = discover(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others") && err.contains("chmod go-w"),
            "{err}"
        );
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(discover(d.path()).is_err(), "the directory is checked too");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&h, Some(65534), None).unwrap();
        let err = discover(d.path()).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534, not root"), "{err}");
    }

    #[tokio::test]
    async fn freeze_in_order_thaw_in_reverse_for_those_that_ran() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        let log = d.path().join("log");
        let line = |n: &str| format!("echo {n} $1 >> {}", log.display());
        hook(d.path(), "10-a", &line("a"));
        hook(
            d.path(),
            "20-b",
            &format!("{}\n[ \"$1\" = freeze ] && exit 3\nexit 0", line("b")),
        );
        hook(d.path(), "30-c", &line("c"));
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_secs(5));
        hooks.check(&[]).await.unwrap();
        let err = hooks.prepare().await.unwrap_err().to_string();
        assert!(err.contains("hook 20-b freeze failed"), "{err}");
        hooks.resume().await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            text, "a freeze\nb freeze\nb thaw\na thaw\n",
            "c never froze, so it is not thawed"
        );
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_at_its_timeout() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        hook(d.path(), "10-slow", "sleep 30");
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_millis(300));
        hooks.check(&[]).await.unwrap();
        let started = std::time::Instant::now();
        let err = hooks.prepare().await.unwrap_err().to_string();
        assert!(err.contains("did not finish within 300ms"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
