//! Hook scripts, called the way QEMU guest agent calls `fsfreeze-hook.d` scripts, so existing
//! ones work unchanged: every executable in `hooks_dir` runs in name order with the argument
//! `freeze` before the freeze, and in reverse order with `thaw` after the thaw, for every hook
//! whose `freeze` ran. The directory and each hook must be owned by root and writable by no one
//! else: a hook runs as root, so anyone who can change one could run anything as root.

use super::pending::{self, Pending, Running};
use super::process_group::{KillGroupOnDrop, ProcessGroup};
use crate::secret::WithoutSecrets;
use crate::systemd::{TransientError, TransientRun, Units};
use crate::transaction::ports::{QuiesceError, Quiescer, Target};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The hooks in one directory, as one quiescer.
pub(crate) struct HookDir {
    dir: PathBuf,
    timeout: Duration,
    hooks: Vec<PathBuf>,
    /// Files in the directory that look like hooks but cannot run, each with why.
    passed_over: Vec<String>,
    /// How many hooks' `freeze` started, in order: these get `thaw`.
    started: usize,
    /// Where each hook is recorded from its `freeze` until its `thaw` ([`super::pending`]).
    runtime_dir: Option<PathBuf>,
    /// systemd, to run each hook as a transient unit of its own; `None` runs them as children.
    units: Option<Arc<dyn Units>>,
    /// The units this run's hooks ran in, stopped once every `thaw` ran.
    started_units: Vec<String>,
}

impl HookDir {
    pub(crate) fn new(dir: PathBuf, timeout: Duration) -> Self {
        HookDir {
            dir,
            timeout,
            hooks: Vec::new(),
            passed_over: Vec::new(),
            started: 0,
            runtime_dir: None,
            units: None,
            started_units: Vec::new(),
        }
    }

    /// Runs each hook as a transient unit of `units` (systemd) when it can: outside the agent's
    /// sandbox, in the host's own environment. Where it cannot, hooks run as the agent's children.
    pub(crate) fn run_through(mut self, units: Arc<dyn Units>) -> Self {
        self.units = Some(units);
        self
    }

    /// Records each hook in `runtime_dir` from its `freeze` until its `thaw`, so that a dead
    /// agent's hooks get their `thaw` from `freezeframe-agent thaw` or the next run.
    pub(crate) fn recorded_in(mut self, runtime_dir: Option<PathBuf>) -> Self {
        self.runtime_dir = runtime_dir;
        self
    }
}

/// Runs `thaw` for a hook a dead agent recorded, after the same ownership checks as discovery;
/// through systemd where it runs transient units, as the hooks of a run are.
pub(crate) async fn thaw_recorded(
    hook: &Path,
    timeout: Duration,
    units: &dyn Units,
) -> Result<(), QuiesceError> {
    let meta = std::fs::metadata(hook)
        .map_err(|e| QuiesceError::with_source(format!("cannot read {}", hook.display()), e))?;
    if let Some(dir) = hook.parent() {
        let dir_meta = std::fs::metadata(dir)
            .map_err(|e| QuiesceError::with_source(format!("cannot read {}", dir.display()), e))?;
        check_owner(dir, &dir_meta)?;
    }
    check_owner(hook, &meta)?;
    let mut started = Vec::new();
    let result = run_hook(hook, "thaw", timeout, None, Some(units), &mut started).await;
    stop_units(units, &mut started).await;
    result
}

/// Stops the units hooks ran in (and what they left running), once their thaws have run.
async fn stop_units(units: &dyn Units, started: &mut Vec<String>) {
    for unit in started.drain(..) {
        if let Err(e) = units.stop(&unit).await {
            tracing::debug!("cannot stop {unit}: {e}");
        }
    }
}

/// Names that are not hooks: the ones QEMU's `fsfreeze-hook` dispatcher passes over (backups,
/// package-manager leftovers, samples), and hidden files and ucf's leftovers besides.
fn ignored(name: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        "~",
        ".bak",
        ".orig",
        ".sample",
        ".ucf-old",
        ".ucf-new",
        ".ucf-dist",
        ".swp",
    ];
    name.starts_with('.')
        || SUFFIXES.iter().any(|s| name.ends_with(s))
        || name.contains(".dpkg-")
        || name.contains(".rpm")
}

/// Refuses what a non-root user could have changed.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), QuiesceError> {
    if meta.uid() != 0 {
        return Err(QuiesceError::new(format!(
            "{} is owned by uid {}, not root: a hook runs as root, so it must be root's \
             (chown root:root {})",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(QuiesceError::new(format!(
            "{} is writable by group or others (mode {:o}): run `chmod go-w {}`",
            path.display(),
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

/// What a hooks directory holds: the hooks to run, in name order, and the files passed over
/// with a reason the user should see (a dangling link, a script not marked executable).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Discovered {
    pub hooks: Vec<PathBuf>,
    pub passed_over: Vec<String>,
}

/// The hooks in `dir`, in name order, after checking ownership and modes. A missing directory
/// has no hooks. Like QEMU's dispatcher, a file that cannot run (a dangling link, no execute
/// bit) is passed over, with a warning; unlike it, a hook anyone but root could change is
/// refused, since it would run as root.
pub(crate) fn discover(dir: &Path) -> Result<Discovered, QuiesceError> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Discovered::default()),
        Err(e) => {
            return Err(QuiesceError::with_source(
                format!("cannot read {}", dir.display()),
                e,
            ))
        }
    };
    check_owner(dir, &meta)?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| QuiesceError::with_source(format!("cannot list {}", dir.display()), e))?;
    let mut found = Discovered::default();
    for entry in entries {
        let entry =
            entry.map_err(|e| QuiesceError::with_source(format!("cannot list {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ignored(&name) {
            continue;
        }
        let path = entry.path();
        // Follow links: what runs is the target, so the target is what is checked.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                found.passed_over.push(format!(
                    "hook {} is a link to nothing: passed over (remove it, or point it at the script)",
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                return Err(QuiesceError::with_source(
                    format!("cannot read {}", path.display()),
                    e,
                ))
            }
        };
        if !meta.is_file() {
            tracing::debug!("{} is not a file: not a hook", path.display());
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            found.passed_over.push(format!(
                "{} is not executable: passed over (`chmod +x {}` to run it as a hook, or rename \
                 it to end in .sample)",
                path.display(),
                path.display()
            ));
            continue;
        }
        check_owner(&path, &meta)?;
        found.hooks.push(path);
    }
    found.hooks.sort();
    found.passed_over.sort();
    Ok(found)
}

/// Records in `runtime_dir` (when given) that `hook` no longer runs, and, for a `freeze`, what
/// it `left` running (its process group, or its unit): a resume for a dead agent ends that after
/// the hook's `thaw`.
fn record_ended(runtime_dir: Option<&Path>, hook: &Path, left: Option<Running>) {
    let Some(dir) = runtime_dir else { return };
    let mut entries = vec![Pending::hook(hook.to_path_buf())];
    entries.extend(left.map(|left| Pending::HookLeft {
        path: hook.to_path_buf(),
        left,
    }));
    if let Err(e) = pending::add_all(dir, entries) {
        // What it ran in stays recorded as running (the hook was recorded before it ran): a
        // resume for a dead agent ends it before the `thaw`, rather than after.
        tracing::warn!(
            "cannot record in {} that hook {} ended: {e}",
            dir.display(),
            hook.display()
        );
    }
}

/// What to do about hook `name` about to run with `arg`, unrecorded (`why`). A `freeze` that
/// cannot be recorded must not run: what it started would outlive a SIGKILLed agent unseen and
/// race the `thaw` run for it. A `thaw` runs even so: it is owed.
fn refuse_unrecorded(name: &str, arg: &str, why: &str) -> Result<(), QuiesceError> {
    if arg == "freeze" {
        return Err(QuiesceError::new(format!(
            "hook {name} freeze was not run: {why} (a resume for an agent killed meanwhile could \
             not end what it starts; check that the runtime directory is writable and has room)"
        )));
    }
    tracing::warn!("hook {name} {arg} runs unrecorded: {why}");
    Ok(())
}

/// What a hook printed is kept up to this size for the log and the report.
const OUTPUT_LIMIT: usize = 64 << 10;
/// Lines logged from what a hook left running (its output after the hook returned).
const LEFT_RUNNING_LINES: usize = 1000;

/// A hook's output, stdout and stderr in the order written, kept up to [`OUTPUT_LIMIT`].
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    cut: bool,
}

impl Output {
    fn keep(&mut self, chunk: &[u8]) {
        let room = OUTPUT_LIMIT.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.cut |= chunk.len() > room;
    }

    /// Reads what is in the pipe now, without waiting; whether the pipe reached its end (no
    /// process holds its other end any more).
    fn drain(&mut self, pipe: &tokio::net::unix::pipe::Receiver) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.try_read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.keep(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Collects what the pipe brings until `ended` (the hook's exit) is ready.
    async fn read_until<T>(
        &mut self,
        pipe: &mut tokio::net::unix::pipe::Receiver,
        ended: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(ended);
        let mut chunk = [0u8; 4096];
        let mut open = true;
        loop {
            tokio::select! {
                result = &mut ended => return result,
                read = tokio::io::AsyncReadExt::read(pipe, &mut chunk), if open => match read {
                    Ok(0) | Err(_) => open = false,
                    Ok(n) => self.keep(&chunk[..n]),
                },
            }
        }
    }

    /// After the hook exited: takes what it wrote before, leaves a reader on the pipe for what
    /// it left running, logs the output, and says whether the hook succeeded (`succeeded`, with
    /// its `status` in words).
    fn finish(
        mut self,
        name: &str,
        arg: &'static str,
        pipe: tokio::net::unix::pipe::Receiver,
        succeeded: bool,
        status: &str,
    ) -> Result<(), QuiesceError> {
        // What it wrote before exiting is in the pipe already.
        if !self.drain(&pipe) {
            log_left_running(name.to_string(), arg, pipe);
        }
        let text = self.text();
        if !text.is_empty() {
            tracing::info!(hook = %name, arg, "{text}");
        }
        if succeeded {
            return Ok(());
        }
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(QuiesceError::new(format!(
            "hook {name} {arg} failed ({status}){}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {}", tail.join(" / "))
            }
        )))
    }

    fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).trim().to_string();
        if self.cut {
            text.push_str(" [output cut]");
        }
        text
    }
}

/// One pipe for a hook's stdout and stderr: the read end, and the write end to give the hook.
/// The agent waits for the hook to exit, never for this pipe to close: a hook may leave a
/// process running that holds it (the lock session of QEMU's MySQL sample, fed through a FIFO
/// until `thaw`).
fn output_pipe() -> Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd), std::io::Error> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
    Ok((receiver, write))
}

/// Logs what a process the hook left running prints, until it closes the pipe; bounded in lines.
/// (When the agent exits first, the pipe closes with it: what it started then gets EPIPE.)
fn log_left_running(name: String, arg: &'static str, pipe: tokio::net::unix::pipe::Receiver) {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(pipe);
        let mut line = Vec::new();
        let mut logged = 0;
        while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
            if logged < LEFT_RUNNING_LINES {
                let text = String::from_utf8_lossy(&line);
                tracing::info!(hook = %name, arg, "left running: {}", text.trim_end());
                logged += 1;
            }
            line.clear();
        }
    });
}

/// Runs one hook with `arg`, bounded by `timeout`. Through systemd when it runs transient
/// units (`units`): the hook then runs as a service of its own, in the host's environment
/// rather than the agent's sandbox (executable memory, the real /tmp, namespaces), and the unit
/// is added to `started`, to be stopped once the hooks are thawed. Otherwise (no systemd) as the
/// agent's child. With a `runtime_dir`, where it runs is recorded there while it runs. What the
/// hook leaves running when it exits is left alone, as QEMU's dispatcher does: that is how a
/// hook holds a lock from `freeze` to `thaw`.
async fn run_hook(
    hook: &Path,
    arg: &'static str,
    timeout: Duration,
    runtime_dir: Option<&Path>,
    units: Option<&dyn Units>,
    started: &mut Vec<String>,
) -> Result<(), QuiesceError> {
    let name = hook
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(units) = units {
        match run_as_unit(hook, &name, arg, timeout, runtime_dir, units, started).await {
            Err(HookFailure::NotStarted(why)) => {
                tracing::debug!("hook {name} runs as the agent's own child: {why}");
            }
            Err(HookFailure::Failed(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
    run_as_child(hook, &name, arg, timeout, runtime_dir).await
}

/// How running a hook as a unit went wrong.
enum HookFailure {
    /// systemd did not start it; nothing ran.
    NotStarted(String),
    Failed(QuiesceError),
}

/// A unit name for one run of hook `name`: what systemd allows, unique in this agent.
fn unit_name(name: &str, arg: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!(
        "freezeframe-hook-{safe}-{arg}-{}-{}.service",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// [`run_hook`] through systemd: a transient oneshot service that remains after its main
/// process exits, with whatever that left running, until it is stopped.
async fn run_as_unit(
    hook: &Path,
    name: &str,
    arg: &'static str,
    timeout: Duration,
    runtime_dir: Option<&Path>,
    units: &dyn Units,
    started: &mut Vec<String>,
) -> Result<(), HookFailure> {
    let failed = |e: QuiesceError| HookFailure::Failed(e);
    let (mut pipe, write) =
        output_pipe().map_err(|e| failed(QuiesceError::with_source(format!("cannot run hook {name}"), e)))?;
    let unit = unit_name(name, arg);
    if let Some(dir) = runtime_dir {
        let running = Pending::Hook {
            path: hook.to_path_buf(),
            running: Some(Running::Unit(unit.clone())),
        };
        if let Err(e) = pending::add(dir, running) {
            let why = format!("cannot record its unit in {}: {e}", dir.display());
            refuse_unrecorded(name, arg, &why).map_err(failed)?;
        }
    }
    let run = units.run_transient(TransientRun {
        unit: &unit,
        description: format!("freezeframe hook {name} {arg}"),
        argv: vec![hook.display().to_string(), arg.to_string()],
        output: write,
        input: None,
        errors: None,
        remain_after_exit: true,
        timeout,
        runtime_max: None,
    });
    let mut output = Output::default();
    // systemd kills it at `timeout`; this bound only backs that up.
    let ended = tokio::time::timeout(
        timeout + Duration::from_secs(10),
        output.read_until(&mut pipe, run),
    )
    .await;
    let result = match ended {
        Ok(Err(TransientError::NotStarted(e))) => {
            record_ended(runtime_dir, hook, None);
            return Err(HookFailure::NotStarted(e.to_string()));
        }
        Err(_) | Ok(Err(TransientError::TimedOut)) => Err(QuiesceError::new(format!(
            "hook {name} {arg} did not finish within {} and was killed, with everything it started",
            humantime::format_duration(timeout)
        ))),
        Ok(Err(TransientError::Lost(e))) => Err(QuiesceError::new(format!("hook {name} {arg}: {e}"))),
        Ok(Ok(status)) => Ok(status),
    };
    let status = match result {
        Ok(status) => status,
        Err(e) => {
            // Whatever is left of it goes now, before anything else runs.
            let _ = units.stop(&unit).await;
            record_ended(runtime_dir, hook, None);
            return Err(failed(e));
        }
    };
    // The unit stays, with what the `freeze` left running in it, until every `thaw` ran.
    let left = (arg == "freeze").then(|| Running::Unit(unit.clone()));
    started.push(unit);
    record_ended(runtime_dir, hook, left);
    output
        .finish(name, arg, pipe, status == 0, &format!("exit status: {status}"))
        .map_err(failed)
}

/// How often a hook whose file is busy being written is tried again, 20 ms apart.
const TEXT_BUSY_RETRIES: u32 = 10;

/// [`run_hook`] as the agent's child, in its own process group (killed with SIGKILL at the
/// timeout: a hook that ignores SIGTERM does not get to hang the run).
async fn run_as_child(
    hook: &Path,
    name: &str,
    arg: &'static str,
    timeout: Duration,
    runtime_dir: Option<&Path>,
) -> Result<(), QuiesceError> {
    let cannot_run = |e: std::io::Error| QuiesceError::with_source(format!("cannot run hook {name}"), e);
    let (mut pipe, write) = output_pipe().map_err(cannot_run)?;
    let record = |group: Option<ProcessGroup>| record_group(runtime_dir, hook, name, arg, group);
    let mut spawned = spawn_or_end(hook, arg, &write, &record, runtime_dir).await;
    // A hook written a moment ago may still be open for writing in a process forked meanwhile
    // (the descriptor lives in the child until its exec): exec fails with ETXTBSY until then.
    for _ in 0..TEXT_BUSY_RETRIES {
        match &spawned {
            Err(SpawnFailure::Spawn(e, _)) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                spawned = spawn_or_end(hook, arg, &write, &record, runtime_dir).await;
            }
            _ => break,
        }
    }
    // The hook holds the pipe's write end now: this one must close, or its end never comes.
    drop(write);
    let (mut child, running) = match spawned {
        Ok(spawned) => spawned,
        Err(SpawnFailure::Spawn(e, _)) => return Err(cannot_run(e)),
        Err(SpawnFailure::Unrecorded(e)) => return Err(e),
    };
    let mut group = KillGroupOnDrop(child.id().map(|id| nix::unistd::Pid::from_raw(id as i32)));
    let mut output = Output::default();
    let exited = tokio::time::timeout(timeout, output.read_until(&mut pipe, child.wait())).await;
    // The record of its group goes only once nothing of it can run on: after it exited, or
    // after its group was killed (an agent killed in between leaves the record, so `thaw`
    // still kills what the hook started before running its `thaw`).
    let status = match exited {
        Ok(Ok(status)) => status,
        Err(_) => {
            let error = QuiesceError::new(format!(
                "hook {name} {arg} did not finish within {} and was killed, with everything it started",
                humantime::format_duration(timeout)
            ));
            return Err(end_unwaited(group, running, runtime_dir, hook, error));
        }
        Ok(Err(e)) => return Err(end_unwaited(group, running, runtime_dir, hook, cannot_run(e))),
    };
    // It exited: what it left running (a lock session held until `thaw`) is its own business,
    // but stays recorded after a `freeze`, for a resume after a SIGKILLed agent to end once it
    // ran the hook's `thaw`.
    group.0 = None;
    if let Some(running) = running {
        let left = (arg == "freeze" && !running.members().is_empty()).then_some(Running::Group(running));
        record_ended(runtime_dir, hook, left);
    }
    output.finish(name, arg, pipe, status.success(), &status.to_string())
}

/// Ends a hook the run no longer waits for (timed out, or its wait failed): kills its process
/// group, then forgets the group's record (in that order: an agent killed in between leaves the
/// record, and `thaw` kills what the hook started), and returns `error`.
fn end_unwaited(
    group: KillGroupOnDrop,
    recorded: Option<ProcessGroup>,
    runtime_dir: Option<&Path>,
    hook: &Path,
    error: QuiesceError,
) -> QuiesceError {
    drop(group);
    fault_point!("hook-killed-unforgotten");
    if recorded.is_some() {
        record_ended(runtime_dir, hook, None);
    }
    error
}

/// [`spawn_recorded`], and when the spawn reports an error after the hook was recorded and let
/// run (tokio could not watch the process it started, which then runs on), kills the recorded
/// group and only then forgets its record, as for a hook that timed out.
async fn spawn_or_end(
    hook: &Path,
    arg: &str,
    output: &std::os::fd::OwnedFd,
    record: &(dyn Fn(Option<ProcessGroup>) -> Result<(), QuiesceError> + Sync),
    runtime_dir: Option<&Path>,
) -> Result<(tokio::process::Child, Option<ProcessGroup>), SpawnFailure> {
    match spawn_recorded(hook, arg, output, record) {
        Err(SpawnFailure::Spawn(e, Some(group))) => {
            let killed = group.kill_leftovers(Duration::from_secs(5)).await;
            // The leader is the agent's own child, unwaited: no zombie stays behind.
            group.reap_leader();
            if killed > 0 {
                tracing::warn!(
                    "hook {}: its start failed ({e}) after it ran: killed {killed} processes",
                    hook.display()
                );
            }
            record_ended(runtime_dir, hook, None);
            Err(SpawnFailure::Spawn(e, None))
        }
        other => other,
    }
}

/// Records (in `runtime_dir`, when given) the process group `group` of hook `name` about to run
/// with `arg`; see [`refuse_unrecorded`] for one that cannot be recorded.
fn record_group(
    runtime_dir: Option<&Path>,
    hook: &Path,
    name: &str,
    arg: &str,
    group: Option<ProcessGroup>,
) -> Result<(), QuiesceError> {
    let Some(dir) = runtime_dir else { return Ok(()) };
    let recorded = match group {
        Some(group) => pending::add(
            dir,
            Pending::Hook {
                path: hook.to_path_buf(),
                running: Some(Running::Group(group)),
            },
        )
        .map_err(|e| format!("cannot record its process group in {}: {e}", dir.display())),
        None => Err("cannot read its process group from /proc".to_string()),
    };
    match recorded {
        Ok(()) => Ok(()),
        Err(why) => refuse_unrecorded(name, arg, &why),
    }
}

/// Why a hook's process did not start.
enum SpawnFailure {
    /// Fork or exec failed; with the group recorded when the hook was recorded and let run
    /// before the spawn said so (it may be running).
    Spawn(std::io::Error, Option<ProcessGroup>),
    /// Its process group could not be recorded: it was killed before it ran.
    Unrecorded(QuiesceError),
}

/// The byte that lets a held hook run ([`spawn_recorded`]).
const RELEASE: u8 = b'R';

/// Starts `hook arg` as the agent's child leading a process group of its own, writing to
/// `output`, but holds it between fork and exec until `record` has recorded its group (from a
/// thread of the agent, as the spawn waits for the exec): an agent SIGKILLed at any moment
/// leaves no hook process that `thaw` cannot find. When `record` fails, the held process is
/// killed before the hook ran. Returns the child and its recorded group.
fn spawn_recorded(
    hook: &Path,
    arg: &str,
    output: &std::os::fd::OwnedFd,
    record: &(dyn Fn(Option<ProcessGroup>) -> Result<(), QuiesceError> + Sync),
) -> Result<(tokio::process::Child, Option<ProcessGroup>), SpawnFailure> {
    use std::os::fd::AsRawFd;
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnFailure::Spawn(e.into(), None));
    let (hello_r, hello_w) = pipe()?;
    let (release_r, release_w) = pipe()?;
    let out = || output.try_clone().map_err(|e| SpawnFailure::Spawn(e, None));
    let mut command = tokio::process::Command::new(hook);
    command
        .without_secrets()
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(out()?)
        .stderr(out()?)
        .process_group(0)
        .kill_on_drop(true);
    let held = HeldChild {
        agent: nix::unistd::getpid().as_raw(),
        hello: hello_w.as_raw_fd(),
        release: release_r.as_raw_fd(),
        agent_ends: [hello_r.as_raw_fd(), release_w.as_raw_fd()],
    };
    // SAFETY: `hold` runs between fork and exec and calls only async-signal-safe functions
    // (prctl, getppid, getpid, close, write, read) on descriptors the child inherited, with no
    // allocation and no shared state.
    unsafe {
        command.pre_exec(move || held.hold());
    }
    std::thread::scope(|scope| {
        let recorder = scope.spawn(move || record_then_release(hello_r, release_w, record));
        let spawned = as_reported(hook, command.spawn());
        // The command holds the output pipe's write ends, the hook has its own copies now.
        drop(command);
        // With no child left that could still say its pid, the recorder reads end-of-file.
        drop(hello_w);
        let recorded = recorder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (spawned, recorded) {
            // Recording failed: the held process was killed, whatever the spawn says.
            (_, Err(e)) => Err(SpawnFailure::Unrecorded(e)),
            // Recorded and released, yet reported failed: the caller ends the group.
            (Err(e), Ok(group)) => Err(SpawnFailure::Spawn(e, group)),
            (Ok(child), Ok(group)) => Ok((child, group)),
        }
    })
}

/// What the spawn of `hook` reported. Fault point `hook-spawn-lost`, configured
/// `return(NAME)`: the spawn of hook NAME reports an error although the hook runs, as tokio's
/// does when it cannot watch a process it started (that process then runs on, unwaited).
#[cfg(feature = "failpoints")]
fn as_reported(
    hook: &Path,
    spawned: std::io::Result<tokio::process::Child>,
) -> std::io::Result<tokio::process::Child> {
    let lost = || -> Option<String> {
        fail::fail_point!("hook-spawn-lost", |name| name);
        None
    };
    let ours = lost().is_some_and(|name| hook.file_name().is_some_and(|f| f == name.as_str()));
    match spawned {
        Ok(child) if ours => {
            // Unwatched, as tokio leaves it: neither killed nor waited for.
            std::mem::forget(child);
            Err(std::io::Error::other(
                "the hook's start was lost (fault point hook-spawn-lost)",
            ))
        }
        spawned => spawned,
    }
}

/// What the spawn of a hook reported.
#[cfg(not(feature = "failpoints"))]
fn as_reported(
    _hook: &Path,
    spawned: std::io::Result<tokio::process::Child>,
) -> std::io::Result<tokio::process::Child> {
    spawned
}

/// The agent's side of [`spawn_recorded`]: reads the held child's pid, records its group, then
/// lets it run, or kills it when the record failed. `Ok(None)`: no child got as far as saying
/// its pid (the spawn failed), so nothing was recorded or released.
fn record_then_release(
    hello: std::os::fd::OwnedFd,
    release: std::os::fd::OwnedFd,
    record: &(dyn Fn(Option<ProcessGroup>) -> Result<(), QuiesceError> + Sync),
) -> Result<Option<ProcessGroup>, QuiesceError> {
    let mut pid = [0u8; 4];
    if std::io::Read::read_exact(&mut std::fs::File::from(hello), &mut pid).is_err() {
        return Ok(None);
    }
    let pid = i32::from_ne_bytes(pid);
    let group = u32::try_from(pid).ok().and_then(ProcessGroup::led_by);
    fault_point!("hook-spawned-unrecorded");
    match record(group) {
        Ok(()) => {
            // A child that died meanwhile makes this fail (EPIPE): the spawn says why. A signal
            // to this thread (EINTR) is no reason to leave the hook held.
            while let Err(nix::errno::Errno::EINTR) = nix::unistd::write(&release, &[RELEASE]) {}
            Ok(group)
        }
        Err(e) => {
            // Held before its exec, it has started nothing: the process is all there is.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            Err(e)
        }
    }
}

/// What a hook's process does between fork and exec ([`spawn_recorded`]): raw descriptor
/// numbers and the agent's pid, copied into the child.
#[derive(Clone, Copy)]
struct HeldChild {
    agent: i32,
    /// Where the child writes its pid.
    hello: std::os::fd::RawFd,
    /// Where it reads [`RELEASE`].
    release: std::os::fd::RawFd,
    /// The agent's ends of both pipes, closed in the child.
    agent_ends: [std::os::fd::RawFd; 2],
}

impl HeldChild {
    /// Dies with the agent, says its pid, and waits to be released. Async-signal-safe only
    /// (between fork and exec): no allocation, no locks.
    fn hold(&self) -> std::io::Result<()> {
        // SAFETY: prctl, getppid, getpid, close, write and read are async-signal-safe; the
        // buffers live on this stack frame and the descriptors are this process's own.
        unsafe {
            // A hook must not outlive an agent killed mid-run: its `thaw` is run by whoever
            // resumes for the dead agent, and must not race a `freeze` still going. (The signal
            // follows the spawning thread: a runtime worker, which lives as long as the run.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != self.agent {
                // The agent is already gone. No allocation here (between fork and exec).
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            for fd in self.agent_ends {
                libc::close(fd);
            }
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(self.hello, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(std::io::Error::last_os_error());
            }
            let mut byte = 0u8;
            loop {
                match libc::read(self.release, (&mut byte as *mut u8).cast(), 1) {
                    1 if byte == RELEASE => return Ok(()),
                    -1 if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                    // End-of-file: the agent did not record it, or is gone.
                    _ => return Err(std::io::Error::from_raw_os_error(libc::ECANCELED)),
                }
            }
        }
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

    fn warnings(&self) -> Vec<String> {
        self.passed_over.clone()
    }

    async fn check(&mut self, _targets: &[Target]) -> Result<(), QuiesceError> {
        let found = discover(&self.dir)?;
        for warning in &found.passed_over {
            tracing::warn!("{warning}");
        }
        (self.hooks, self.passed_over) = (found.hooks, found.passed_over);
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
                    QuiesceError::new(format!(
                        "cannot record hook {} in {}: {e}",
                        hook.display(),
                        dir.display()
                    ))
                })?;
            }
            self.started = i + 1;
            run_hook(
                hook,
                "freeze",
                self.timeout,
                self.runtime_dir.as_deref(),
                self.units.as_deref(),
                &mut self.started_units,
            )
            .await?;
        }
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), QuiesceError> {
        let mut failures = Vec::new();
        for hook in self.hooks[..self.started].iter().rev() {
            if let Err(e) = run_hook(
                hook,
                "thaw",
                self.timeout,
                self.runtime_dir.as_deref(),
                self.units.as_deref(),
                &mut self.started_units,
            )
            .await
            {
                failures.push(crate::errors::error_chain(&e));
            }
            // Its `thaw` ran; a failure is this run's to report, not one to repeat later. What
            // its `freeze` left running was the `thaw`'s to end (and its unit is stopped below).
            if let Some(dir) = &self.runtime_dir {
                let _ = pending::remove_hook(dir, hook);
            }
        }
        self.started = 0;
        // Every `thaw` ran: what the hooks' units still hold goes with them.
        if let Some(units) = &self.units {
            stop_units(units.as_ref(), &mut self.started_units).await;
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(QuiesceError::new(failures.join("; ")))
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
    fn what_qemus_dispatcher_passes_over_is_not_a_hook_and_what_cannot_run_is_named() {
        let d = dir();
        hook(d.path(), "20-app", "true");
        hook(d.path(), "10-db", "true");
        // Every pattern QEMU's fsfreeze-hook skips, and ours.
        for name in [
            "x~",
            "x.bak",
            "x.orig",
            "x.rpmnew",
            "x.rpmorig",
            "x.rpmsave",
            "x.sample",
            "x.dpkg-old",
            "x.dpkg-new",
            "x.dpkg-tmp",
            "x.dpkg-dist",
            "x.dpkg-bak",
            "x.dpkg-backup",
            "x.dpkg-remove",
            ".hidden",
            "x.ucf-old",
        ] {
            hook(d.path(), name, "exit 1");
        }
        std::fs::write(d.path().join("60-readme"), "not executable").unwrap();
        std::os::unix::fs::symlink("/nonexistent/hook", d.path().join("70-gone")).unwrap();
        std::fs::create_dir(d.path().join("80-dir")).unwrap();
        let found = discover(d.path()).unwrap();
        let names: Vec<String> = found
            .hooks
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-db", "20-app"], "as root, the files here are root's");
        assert_eq!(found.passed_over.len(), 2, "{:?}", found.passed_over);
        assert!(
            found.passed_over[0].contains("60-readme is not executable")
                && found.passed_over[0].contains("chmod +x"),
            "{:?}",
            found.passed_over
        );
        assert!(
            found.passed_over[1].contains("70-gone is a link to nothing"),
            "{:?}",
            found.passed_over
        );
        assert_eq!(
            discover(&d.path().join("missing")).unwrap(),
            Discovered::default()
        );
    }

    #[tokio::test]
    async fn a_hook_that_leaves_a_process_running_returns_when_it_exits_and_the_process_lives_on() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        let pid_file = d.path().join("bg.pid");
        // As QEMU's MySQL sample does: a process started in the background holds the hook's
        // stdout and stderr open until `thaw`.
        hook(
            d.path(),
            "10-lock",
            &format!(
                "case \"$1\" in\nfreeze) echo before; sleep 40 & echo $! > {pid}; echo started >&2 ;;\n\
                 thaw) kill $(cat {pid}) ;;\nesac",
                pid = pid_file.display()
            ),
        );
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_secs(5));
        hooks.check(&[]).await.unwrap();
        hooks
            .prepare()
            .await
            .expect("the hook exited at once; its child holds no one up");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        assert!(alive(pid), "what the hook left running lives until its thaw");
        hooks.resume().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive(pid) && std::time::Instant::now() < deadline {
            // Reap it if it became ours (it is the test process's grandchild: init reaps it).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(pid), "the thaw ended it");
    }

    #[tokio::test]
    async fn a_hook_output_is_kept_from_both_streams_when_it_fails() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        hook(d.path(), "10-db", "echo one; echo two >&2; sleep 30 & exit 4");
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_secs(5));
        hooks.check(&[]).await.unwrap();
        let err = hooks.prepare().await.unwrap_err().to_string();
        assert!(
            err.contains("hook 10-db freeze failed (exit status: 4): one / two"),
            "{err}"
        );
    }

    /// Hooks 10-a, 20-b and 30-c in a checked HookDir, each logging `<name> <arg>` to the
    /// returned log; 20-b exits 3 when called with `failing_arg`.
    async fn three_hooks_b_failing(failing_arg: &str) -> (tempfile::TempDir, PathBuf, HookDir) {
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
            &format!("{}\n[ \"$1\" = {failing_arg} ] && exit 3\nexit 0", line("b")),
        );
        hook(d.path(), "30-c", &line("c"));
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_secs(5));
        hooks.check(&[]).await.unwrap();
        (d, log, hooks)
    }

    #[tokio::test]
    async fn a_failing_thaw_does_not_stop_the_other_thaws() {
        let (_dir, log, mut hooks) = three_hooks_b_failing("thaw").await;
        hooks.prepare().await.unwrap();
        let err = hooks.resume().await.unwrap_err().to_string();
        assert!(err.contains("hook 20-b thaw failed"), "{err}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "a freeze\nb freeze\nc freeze\nc thaw\nb thaw\na thaw\n");
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
        let (_dir, log, mut hooks) = three_hooks_b_failing("freeze").await;
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
    async fn a_hook_still_open_for_writing_a_moment_runs_once_it_is_closed() {
        let d = dir();
        let log = d.path().join("log");
        let path = hook(d.path(), "10-new", &format!("echo \"$1\" >> {}", log.display()));
        // As a configuration tool that has just written it, or a process forked meanwhile.
        let writer = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(writer);
        });
        let mut hooks = HookDir::new(d.path().to_path_buf(), Duration::from_secs(10));
        hooks.check(&[]).await.unwrap();
        hooks.prepare().await.unwrap();
        hooks.resume().await.unwrap();
        closer.join().unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "freeze\nthaw\n");
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

    /// A `freeze` whose process group cannot be recorded never runs (a SIGKILLed agent would
    /// leave what it starts unseen); a `thaw` runs even so, since it is owed.
    #[tokio::test]
    async fn a_freeze_whose_group_cannot_be_recorded_is_not_run_and_a_thaw_is() {
        let d = dir();
        let ran = d.path().join("ran");
        let h = hook(d.path(), "10-db", &format!("echo \"$1\" >> {}", ran.display()));
        // A runtime directory that is a file: nothing can be recorded in it.
        let runtime = d.path().join("not-a-dir");
        std::fs::write(&runtime, "").unwrap();
        let timeout = Duration::from_secs(10);
        let err = run_as_child(&h, "10-db", "freeze", timeout, Some(&runtime))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hook 10-db freeze was not run: cannot record its process group in"),
            "{err}"
        );
        assert!(!ran.exists(), "the freeze ran unrecorded");
        run_as_child(&h, "10-db", "thaw", timeout, Some(&runtime))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&ran).unwrap(), "thaw\n");
    }

    /// Live processes (not zombies) whose command line mentions `needle`.
    fn running(needle: &str) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let zombie = stat.rsplit(')').next()?.trim_start().starts_with('Z');
                (!zombie && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
            })
            .collect()
    }

    /// A spawn that reports an error after the hook was recorded and let run: the hook may be
    /// running (tokio could not watch it), so its group is killed, and only then forgotten.
    #[cfg(feature = "failpoints")]
    #[tokio::test]
    async fn a_hook_whose_spawn_fails_after_it_ran_is_killed_before_its_group_is_forgotten() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        let h = hook(d.path(), "10-lost", "sleep 600.17 & wait");
        let runtime = d.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        // Only this hook's spawn is lost: other tests run hooks alongside.
        fail::cfg("hook-spawn-lost", "return(10-lost)").unwrap();
        let result = run_as_child(&h, "10-lost", "freeze", Duration::from_secs(10), Some(&runtime)).await;
        fail::remove("hook-spawn-lost");
        let err = result.unwrap_err().to_string();
        assert!(err.contains("cannot run hook 10-lost"), "{err}");
        let survivors = running(&h.display().to_string());
        for pid in &survivors {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
        }
        assert_eq!(survivors, Vec::<i32>::new(), "the lost hook runs on");
        assert_eq!(
            pending::recorded(&runtime),
            [Pending::hook(h.clone())],
            "its group is forgotten once killed"
        );
    }

    /// A `freeze` that exits leaving processes in its group (a lock session held until `thaw`)
    /// leaves them recorded until its `thaw` ran.
    #[tokio::test]
    async fn what_a_freeze_leaves_running_is_recorded_until_its_thaw_ran() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "hooks run as root: run the tests as root"
        );
        let d = dir();
        let pid_file = d.path().join("bg.pid");
        hook(
            d.path(),
            "10-lock",
            &format!(
                "case \"$1\" in\nfreeze) sleep 600.18 & echo $! > {pid} ;;\nthaw) kill $(cat {pid}) ;;\nesac",
                pid = pid_file.display()
            ),
        );
        hook(d.path(), "20-plain", "true");
        let runtime = d.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        let mut hooks =
            HookDir::new(d.path().to_path_buf(), Duration::from_secs(10)).recorded_in(Some(runtime.clone()));
        hooks.check(&[]).await.unwrap();
        hooks.prepare().await.unwrap();
        let recorded = pending::recorded(&runtime);
        let left: Vec<&Pending> = recorded
            .iter()
            .filter(|e| matches!(e, Pending::HookLeft { .. }))
            .collect();
        assert!(
            matches!(left[..], [Pending::HookLeft { path, left: Running::Group(_) }] if path.ends_with("10-lock")),
            "{recorded:?}"
        );
        hooks.resume().await.unwrap();
        assert_eq!(pending::recorded(&runtime), [], "forgotten once the thaw ran");
    }

    /// systemd that records the transient units asked for, and says each exited 0.
    #[derive(Default)]
    struct RunsRecorded(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Units for RunsRecorded {
        async fn list_active(
            &self,
            _: &[&str],
        ) -> Result<Vec<crate::systemd::UnitState>, crate::systemd::SystemdError> {
            Ok(Vec::new())
        }
        async fn describe(
            &self,
            unit: &str,
        ) -> Result<crate::systemd::UnitState, crate::systemd::SystemdError> {
            Err(crate::systemd::SystemdError::Unreachable(unit.into()))
        }
        async fn freeze(&self, _: &str) -> Result<(), crate::systemd::SystemdError> {
            Ok(())
        }
        async fn thaw(&self, _: &str) -> Result<(), crate::systemd::SystemdError> {
            Ok(())
        }
        async fn stop(&self, _: &str) -> Result<(), crate::systemd::SystemdError> {
            Ok(())
        }
        async fn start(&self, _: &str) -> Result<(), crate::systemd::SystemdError> {
            Ok(())
        }
        async fn run_transient(&self, run: TransientRun<'_>) -> Result<i32, TransientError> {
            self.0.lock().unwrap().push(run.argv.join(" "));
            Ok(0)
        }
    }

    /// As a child: a `freeze` whose unit cannot be recorded is not run, a `thaw` is.
    #[tokio::test]
    async fn a_freeze_whose_unit_cannot_be_recorded_is_not_run_and_a_thaw_is() {
        let d = dir();
        let h = hook(d.path(), "10-db", "true");
        let runtime = d.path().join("not-a-dir");
        std::fs::write(&runtime, "").unwrap();
        let units = RunsRecorded::default();
        let mut started = Vec::new();
        let timeout = Duration::from_secs(10);
        let freeze = run_as_unit(
            &h,
            "10-db",
            "freeze",
            timeout,
            Some(&runtime),
            &units,
            &mut started,
        )
        .await;
        let err = match freeze {
            Err(HookFailure::Failed(e)) => e.to_string(),
            Err(HookFailure::NotStarted(why)) => panic!("fell back to a child: {why}"),
            Ok(()) => panic!("the freeze ran unrecorded"),
        };
        assert!(
            err.contains("hook 10-db freeze was not run: cannot record its unit in"),
            "{err}"
        );
        assert_eq!(*units.0.lock().unwrap(), Vec::<String>::new(), "the freeze ran");
        assert!(
            run_as_unit(&h, "10-db", "thaw", timeout, Some(&runtime), &units, &mut started)
                .await
                .is_ok(),
            "the thaw is owed"
        );
        assert_eq!(*units.0.lock().unwrap(), [format!("{} thaw", h.display())]);
    }
}
