//! The database clients the native quiescers start (`psql` through `runuser`, the `mariadb`
//! lock session): as transient systemd units, as hooks run, so they see the host as it is
//! rather than through the agent's sandbox (a socket in the host's `/tmp`, which `PrivateTmp`
//! hides from the agent). Their standard descriptors are pipes whose other ends the agent
//! keeps, so a session is driven exactly as a child's would be, and ends with the agent: when
//! the agent dies, its end of the session's stdin closes, and the client exits. Where systemd
//! cannot run them (no systemd, a private bus in tests), they run as the agent's children.
//!
//! Clients are started before the freeze; during the window they are only talked to.

use crate::secret::{Secret, WithoutSecrets};
use crate::systemd::{TransientError, TransientRun, Units};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// A client program to run.
pub(crate) struct Program {
    /// Its name (found in the agent's `PATH`) or path, then its arguments.
    pub argv: Vec<String>,
    /// A password the program reads from this environment variable (`MYSQL_PWD`). Never in the
    /// unit's properties, which anyone may read: a shell reads it from the first line of its
    /// stdin and exports it to the program alone.
    pub password: Option<(&'static str, Secret)>,
}

/// Where clients run: through systemd when it runs them, otherwise as the agent's children.
#[derive(Clone, Default)]
pub(crate) struct Clients {
    units: Option<Arc<dyn Units>>,
}

/// A started client: the agent's ends of its standard descriptors, and what it runs in.
pub(crate) struct Started {
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub process: Process,
}

/// A started client's process, or its unit.
pub(crate) struct Process(RunsIn);

enum RunsIn {
    Child(tokio::process::Child),
    Unit { name: String, units: Arc<dyn Units> },
}

/// What a client that ran to its end said.
pub(crate) struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The client's pipes: the agent's ends and the client's ends.
struct Pipes {
    ours: (pipe::Sender, pipe::Receiver, pipe::Receiver),
    theirs: (OwnedFd, OwnedFd, OwnedFd),
}

fn pipes() -> std::io::Result<Pipes> {
    // O_CLOEXEC: no other process the agent starts inherits an end, so the session's stdin
    // reaches its end when the agent's end closes, and only then.
    let pair = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (stdin_r, stdin_w) = pair()?;
    let (stdout_r, stdout_w) = pair()?;
    let (stderr_r, stderr_w) = pair()?;
    Ok(Pipes {
        ours: (
            pipe::Sender::from_owned_fd(stdin_w)?,
            pipe::Receiver::from_owned_fd(stdout_r)?,
            pipe::Receiver::from_owned_fd(stderr_r)?,
        ),
        theirs: (stdin_r, stdout_w, stderr_w),
    })
}

/// The shell line that reads the password's variable from stdin's first line, then runs the
/// program (`$0`) with its arguments.
fn with_password(variable: &str, argv: &[String]) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("IFS= read -r {variable} && export {variable} && exec \"$0\" \"$@\""),
    ];
    wrapped.extend_from_slice(argv);
    wrapped
}

/// `name` as an absolute path from the agent's `PATH` (systemd wants one), or as it is.
fn resolved(name: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .map(|found: PathBuf| found.display().to_string())
        .unwrap_or_else(|| name.to_string())
}

/// What runs for `program`: its path, its arguments, and the wrapper that passes its password.
fn command_line(program: &Program) -> Vec<String> {
    let mut argv = program.argv.clone();
    argv[0] = resolved(&argv[0]);
    match &program.password {
        Some((variable, _)) => with_password(variable, &argv),
        None => argv,
    }
}

/// A unit name for one client run: unique in this agent.
fn unit_name(program: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let base = program.rsplit('/').next().unwrap_or(program);
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!(
        "freezeframe-client-{safe}-{}-{}.service",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl Clients {
    /// Clients run as the agent's children.
    pub(crate) fn direct() -> Self {
        Clients { units: None }
    }

    /// Clients run as transient units of `units` when it can start them.
    pub(crate) fn through(units: Arc<dyn Units>) -> Self {
        Clients { units: Some(units) }
    }

    /// Starts `program` with its standard descriptors piped to the agent, and gives it its
    /// password, if any. `timeout` bounds systemd's start job; as a unit, systemd stops it
    /// `lifetime` after it started, should the agent not have ended it by then (a unit is
    /// outside the agent's cgroup: its stop does not end it).
    pub(crate) async fn spawn(
        &self,
        program: &Program,
        timeout: Duration,
        lifetime: Duration,
    ) -> std::io::Result<Started> {
        let argv = command_line(program);
        let Pipes { ours, theirs } = pipes()?;
        let (stdin, stdout, stderr) = ours;
        let runs_in = match &self.units {
            Some(units) => match start_unit(units, &argv, theirs, timeout, lifetime).await? {
                Ok(name) => RunsIn::Unit {
                    name,
                    units: units.clone(),
                },
                Err(theirs) => start_child(&argv, theirs)?,
            },
            None => start_child(&argv, theirs)?,
        };
        let mut started = Started {
            stdin,
            stdout,
            stderr,
            process: Process(runs_in),
        };
        if let Some((_, password)) = &program.password {
            started
                .stdin
                .write_all(format!("{}\n", password.expose()).as_bytes())
                .await?;
        }
        Ok(started)
    }

    /// Runs `program` to its end with nothing more on its stdin, within `timeout`.
    pub(crate) async fn output(&self, program: &Program, timeout: Duration) -> std::io::Result<Output> {
        let argv = command_line(program);
        if let Some(units) = &self.units {
            if let Some(output) = output_as_unit(units.as_ref(), program, &argv, timeout).await? {
                return Ok(output);
            }
        }
        output_as_child(program, &argv, timeout).await
    }
}

/// Pipes for a client that gets nothing on its stdin but its password, if any.
async fn pipes_with_password(program: &Program) -> std::io::Result<Pipes> {
    let mut pipes = pipes()?;
    if let Some((_, password)) = &program.password {
        // One short line: the pipe holds it until the client reads it.
        pipes
            .ours
            .0
            .write_all(format!("{}\n", password.expose()).as_bytes())
            .await?;
    }
    Ok(pipes)
}

/// Runs `argv` to its end as a transient unit; `None` when systemd did not run it.
async fn output_as_unit(
    units: &dyn Units,
    program: &Program,
    argv: &[String],
    timeout: Duration,
) -> std::io::Result<Option<Output>> {
    let Pipes { ours, theirs } = pipes_with_password(program).await?;
    let (stdin, stdout, stderr) = ours;
    drop(stdin);
    let (stdin_r, stdout_w, stderr_w) = theirs;
    let name = unit_name(&program.argv[0]);
    let run = units.run_transient(TransientRun {
        unit: &name,
        description: format!("freezeframe database client {}", program.argv[0]),
        argv: argv.to_vec(),
        output: stdout_w,
        input: Some(stdin_r),
        errors: Some(stderr_w),
        remain_after_exit: false,
        timeout,
        runtime_max: None,
    });
    // What it wrote before it exited is in the pipes; they end once its unit went.
    let (ended, out, err) = collect(stdout, stderr, run).await;
    let success = match ended {
        Ok(status) => status == 0,
        Err(TransientError::TimedOut) => return Err(timed_out()),
        // It ran and failed; its exit status was not kept.
        Err(TransientError::Lost(e)) => {
            tracing::debug!("database client: {e}");
            false
        }
        Err(TransientError::NotStarted(e)) => {
            tracing::debug!("database client runs as the agent's own child: {e}");
            return Ok(None);
        }
    };
    Ok(Some(Output::of(success, out, err)))
}

/// Runs `argv` to its end as the agent's child, killed past `timeout`.
async fn output_as_child(program: &Program, argv: &[String], timeout: Duration) -> std::io::Result<Output> {
    let Pipes { ours, theirs } = pipes_with_password(program).await?;
    let (stdin, stdout, stderr) = ours;
    drop(stdin);
    let RunsIn::Child(mut child) = start_child(argv, theirs)? else {
        unreachable!("start_child starts a child")
    };
    let ended = tokio::time::timeout(timeout, child.wait());
    let (ended, out, err) = collect(stdout, stderr, ended).await;
    // A child past its timeout is killed as it drops (kill_on_drop).
    let status = ended.map_err(|_| timed_out())??;
    Ok(Output::of(status.success(), out, err))
}

impl Output {
    fn of(success: bool, out: Vec<u8>, err: Vec<u8>) -> Output {
        Output {
            success,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }
}

/// Reads both pipes until `ended` is ready, then what is left in them (for a few seconds at
/// most: a process the client left behind may hold them open).
async fn collect<T>(
    mut stdout: pipe::Receiver,
    mut stderr: pipe::Receiver,
    ended: impl std::future::Future<Output = T>,
) -> (T, Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = read_both(&mut stdout, &mut out, &mut stderr, &mut err, ended).await;
    let rest = async { tokio::join!(read_into(&mut stdout, &mut out), read_into(&mut stderr, &mut err)) };
    let _ = tokio::time::timeout(Duration::from_secs(5), rest).await;
    (result, out, err)
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client did not finish in time and was killed",
    )
}

/// Appends what `pipe` brings to `into`, until it ends (cancel-safe: what was read stays).
pub(crate) async fn read_into(pipe: &mut pipe::Receiver, into: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        into.extend_from_slice(&chunk[..n]);
    }
}

/// Collects both pipes until `ended` is ready, and returns what it gave.
async fn read_both<T>(
    stdout: &mut pipe::Receiver,
    out: &mut Vec<u8>,
    stderr: &mut pipe::Receiver,
    err: &mut Vec<u8>,
    ended: impl std::future::Future<Output = T>,
) -> T {
    let reading = async {
        tokio::join!(read_into(stdout, out), read_into(stderr, err));
        std::future::pending::<()>().await;
    };
    tokio::select! {
        result = ended => result,
        _ = reading => unreachable!("reading never ends by itself"),
    }
}

/// Starts `argv` as a transient unit with the client's ends of the pipes; gives them back when
/// systemd did not start it (nothing ran), for the caller to start it otherwise.
async fn start_unit(
    units: &Arc<dyn Units>,
    argv: &[String],
    theirs: (OwnedFd, OwnedFd, OwnedFd),
    timeout: Duration,
    lifetime: Duration,
) -> std::io::Result<Result<String, (OwnedFd, OwnedFd, OwnedFd)>> {
    let name = unit_name(&argv[0]);
    // systemd gets copies: the originals stay for a start without it.
    let (stdin_r, stdout_w, stderr_w) = &theirs;
    let run = TransientRun {
        unit: &name,
        description: format!("freezeframe database client {}", argv[0]),
        argv: argv.to_vec(),
        output: stdout_w.try_clone()?,
        input: Some(stdin_r.try_clone()?),
        errors: Some(stderr_w.try_clone()?),
        remain_after_exit: false,
        timeout,
        runtime_max: Some(lifetime),
    };
    match units.start_transient(run).await {
        Ok(()) => Ok(Ok(name)),
        Err(TransientError::NotStarted(e)) => {
            tracing::debug!("database client runs as the agent's own child: {e}");
            Ok(Err(theirs))
        }
        Err(e) => {
            // It may run: stop it, rather than start a second one.
            let _ = units.stop(&name).await;
            Err(std::io::Error::other(format!("{name}: {e}")))
        }
    }
}

/// Starts `argv` as the agent's child on the client's ends of the pipes.
fn start_child(argv: &[String], theirs: (OwnedFd, OwnedFd, OwnedFd)) -> std::io::Result<RunsIn> {
    let (stdin_r, stdout_w, stderr_w) = theirs;
    let child = tokio::process::Command::new(&argv[0])
        // The client (psql runs as the database's user) must not read the API token.
        .without_secrets()
        .args(&argv[1..])
        .stdin(stdin_r)
        .stdout(stdout_w)
        .stderr(stderr_w)
        .kill_on_drop(true)
        .spawn()?;
    Ok(RunsIn::Child(child))
}

impl Process {
    /// Ends the client once its stdin is closed (a session ends there): it gets up to `wait`
    /// to exit as the agent's child, then is killed; its unit is stopped (which waits for it).
    pub(crate) async fn end(self, wait: Duration) {
        match self.0 {
            RunsIn::Child(mut child) => {
                let _ = tokio::time::timeout(wait, child.wait()).await;
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            RunsIn::Unit { name, units } => {
                if let Err(e) = units.stop(&name).await {
                    tracing::debug!("{name} ended before its stop: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::Unreachable;
    use tokio::io::AsyncBufReadExt;

    fn sh(script: &str) -> Program {
        Program {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            password: None,
        }
    }

    /// Where systemd cannot run units (here: none reachable), clients run as the agent's
    /// children, the same way for a one-off client and for a held session.
    fn without_systemd() -> Clients {
        Clients::through(Arc::new(Unreachable("no systemd here".into())))
    }

    #[tokio::test]
    async fn without_systemd_a_client_runs_as_a_child_and_its_streams_and_status_are_kept() {
        for clients in [without_systemd(), Clients::direct()] {
            let out = clients
                .output(&sh("echo out; echo err >&2; exit 3"), Duration::from_secs(30))
                .await
                .unwrap();
            assert!(!out.success);
            assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));
            let out = clients
                .output(&sh("echo fine"), Duration::from_secs(30))
                .await
                .unwrap();
            assert!(out.success && out.stdout == "fine\n", "{}", out.stderr);
        }
    }

    #[tokio::test]
    async fn a_session_is_driven_through_its_pipes_gets_its_password_alone_and_ends_with_its_stdin() {
        // Says its password, then echoes each line it reads until its stdin ends.
        let program = Program {
            password: Some(("MYSQL_PWD", Secret::new("s3cret word"))),
            ..sh("echo \"pw=$MYSQL_PWD\"; while IFS= read -r line; do echo \"got $line\"; done; echo bye")
        };
        let started = without_systemd()
            .spawn(&program, Duration::from_secs(30), Duration::from_secs(60))
            .await
            .unwrap();
        let Started {
            mut stdin,
            stdout,
            process,
            ..
        } = started;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "pw=s3cret word");
        stdin.write_all(b"SELECT 1;\n").await.unwrap();
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "got SELECT 1;");
        // The password went through the pipe, never on a command line.
        let RunsIn::Child(child) = &process.0 else {
            panic!("runs as a child without systemd")
        };
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id().unwrap())).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
        // Closing the agent's end of its stdin ends it, as the agent's death would.
        drop(stdin);
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "bye");
        assert_eq!(lines.next_line().await.unwrap(), None);
        process.end(Duration::from_secs(30)).await;
    }
}
