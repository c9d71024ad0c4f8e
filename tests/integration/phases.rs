//! The fault matrix: the agent SIGKILLed, SIGTERMed and stopped (SIGSTOP) at each phase of a
//! run (during quiesce, right after the freeze, during the API call, between two thaws, during
//! resume), on two real filesystems with a hook quiescer and a writer. Each case asserts that
//! no filesystem stays frozen past `max_freeze`, that the hook's `thaw` ran for its `freeze`
//! (for a killed agent: through `freezeframe-agent thaw`, as the unit's ExecStopPost runs it),
//! that the result names what happened, and that every write the writer saw acknowledged is
//! on the filesystem afterwards.

use freezeframe_tests::*;
use nix::sys::signal::Signal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_FREEZE: Duration = Duration::from_secs(3);
/// Room for a loaded test machine on top of `max_freeze`.
const SLACK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    Quiesce,
    AfterFreeze,
    Request,
    BetweenThaws,
    Resume,
    /// The hook's `freeze` process exists, its process group not yet recorded.
    HookSpawned,
}

const PHASES: [At; 5] = [
    At::Quiesce,
    At::AfterFreeze,
    At::Request,
    At::BetweenThaws,
    At::Resume,
];

impl At {
    /// Where the agent is held for the signal: a paused hook or a failpoint.
    fn failpoints(self) -> &'static str {
        match self {
            At::AfterFreeze => "after-freeze=sleep(6000)",
            At::Request => "local-image-copy=sleep(6000)",
            At::BetweenThaws => "between-thaws=sleep(6000)",
            At::HookSpawned => "hook-spawned-unrecorded=sleep(6000)",
            At::Quiesce | At::Resume => "",
        }
    }
}

/// A writer of numbered, fdatasync'd lines, remembering the last one acknowledged.
struct Writer {
    path: PathBuf,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: PathBuf) -> Writer {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, p) = (acked.clone(), stop.clone(), path.clone());
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                writeln!(f, "{n}").unwrap();
                f.sync_data().unwrap();
                a.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            path,
            acked,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it and checks every acknowledged line is in the file, in order.
    fn stop_and_check(mut self, case: &str) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let acked = self.acked.load(Ordering::SeqCst);
        assert!(acked > 0, "{case}: the writer never got a write through");
        let text = std::fs::read_to_string(&self.path).unwrap();
        let lines: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert!(
            lines.len() as u64 >= acked && lines.iter().zip(1..).all(|(l, n)| *l == n),
            "{case}: acknowledged writes missing: {acked} acknowledged, file holds {}",
            lines.len()
        );
    }
}

fn hook_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn wait_for_line(log: &Path, line: &str, agent: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook_log(log).iter().any(|l| l == line) {
        if let Some(status) = agent.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = agent.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("the agent exited ({status}) before {line}: {stderr}");
        }
        assert!(Instant::now() < deadline, "no {line} in the hook log");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Command lines of the processes whose command line contains `needle`.
fn processes_running(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

fn rcu_expedited() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/rcu_expedited")
        .ok()
        .map(|v| v.trim().to_string())
}

/// Waits until one of the agent's threads sleeps (the failpoint's `sleep(…)`; nothing else in a
/// snapshot run sleeps so: its other threads wait on futexes and epoll), as its kernel stack
/// says (`/proc/PID/task/TID/wchan`).
pub(crate) fn wait_in_failpoint_pause(agent: &mut Child) {
    let tasks = PathBuf::from(format!("/proc/{}/task", agent.id()));
    let sleeping = || {
        std::fs::read_dir(&tasks)
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| {
                std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w == "hrtimer_nanosleep")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sleeping() {
        assert!(
            agent.try_wait().unwrap().is_none(),
            "the agent exited before its pause"
        );
        assert!(
            Instant::now() < deadline,
            "the agent did not reach its failpoint's pause"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the thaw guard `pid`, past its deadline, has thawed and told the agent: it then
/// waits for the agent's word with no timeout (`ppoll` with a null timeout, its third argument,
/// in `/proc/PID/syscall`), where before its deadline it waits with one.
fn wait_until_guard_said_deadline_thaw(pid: u32) {
    #[cfg(target_arch = "x86_64")]
    const PPOLL: &str = "271";
    #[cfg(target_arch = "aarch64")]
    const PPOLL: &str = "73";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Ok(call) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
            return; // gone: it thawed and exited
        };
        let args: Vec<&str> = call.split_whitespace().collect();
        if args.first() == Some(&PPOLL) && args.get(3) == Some(&"0x0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the guard did not say its deadline thaw: {call}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run_case(at: At, signal: Signal) {
    let case = format!("{signal} at {at:?}");
    let dir = scratch();
    let a = loop_fs(Fs::Ext4, 64, &dir.path().join("a.img"), &dir.path().join("a"));
    let b = loop_fs(
        Fs::Xfs,
        Fs::Xfs.min_mib(),
        &dir.path().join("b.img"),
        &dir.path().join("b"),
    );
    let config = dir.path().join("etc/config.toml");
    let runtime = dir.path().join("run");
    write_config(
        &config,
        &[&a.mountpoint, &b.mountpoint],
        &runtime,
        &dir.path().join("images"),
        &format!("{}s", MAX_FREEZE.as_secs()),
    );
    let log = dir.path().join("hook.log");
    let hooks = dir.path().join("etc/hooks.d");
    std::fs::create_dir_all(&hooks).unwrap();
    // The fraction marks this case's sleeps, to look for them afterwards (tests run alongside:
    // the SIGKILL matrix's sleeps are not this case's).
    let mark = if at == At::HookSpawned { 99 } else { signal as i32 };
    let pause = |arg: &str, secs: u32| match (at, arg) {
        (At::Quiesce | At::HookSpawned, "freeze") | (At::Resume, "thaw") => format!("sleep {secs}.{mark}"),
        _ => "true".into(),
    };
    let hook = hooks.join("50-app");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1-started\" >> {log}\n\
             if [ \"$1\" = freeze ]; then {}; else {}; fi\necho \"$1\" >> {log}\n",
            pause("freeze", 5),
            pause("thaw", 4),
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let writer = Writer::start(a.mountpoint.join("journal"));
    let rcu_before = rcu_expedited();

    let notify = NotifySocket::bind(dir.path());
    let mut agent = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .env("FAILPOINTS", at.failpoints())
        .env("NOTIFY_SOCKET", &notify.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = |text: &str, agent: &mut Child| {
        notify.wait_for_status(text, Duration::from_secs(60), || {
            agent
                .try_wait()
                .unwrap()
                .map(|s| format!("the agent exited ({s})"))
        })
    };
    let mut frozen_at = None;
    match at {
        At::Quiesce => wait_for_line(&log, "freeze-started", &mut agent),
        At::HookSpawned => {
            wait_in_failpoint_pause(&mut agent);
            // A hook that ran now would write its first line within moments.
            let grace = Instant::now() + Duration::from_secs(1);
            while Instant::now() < grace && hook_log(&log).is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(
                hook_log(&log),
                Vec::<String>::new(),
                "{case}: the hook ran before its process group was recorded"
            );
        }
        At::Resume => {
            status("resuming applications", &mut agent);
            wait_for_line(&log, "thaw-started", &mut agent);
        }
        At::AfterFreeze | At::Request | At::BetweenThaws => {
            frozen_at = Some(status("freezing filesystems", &mut agent));
            let next = match at {
                At::AfterFreeze => "freezing filesystems",
                At::Request => "requesting the snapshot",
                _ => "thawing filesystems",
            };
            if next != "freezing filesystems" {
                status(next, &mut agent);
            }
            // Into the failpoint's pause: the status comes before the phase's work (a freeze
            // flushes both filesystems first, seconds on a loaded disk).
            wait_in_failpoint_pause(&mut agent);
        }
    }
    // The guard of the freeze (its record is written before the first FIFREEZE).
    let stopped_frozen = signal == Signal::SIGSTOP && matches!(at, At::AfterFreeze | At::Request);
    let guard = stopped_frozen.then(|| {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(runtime.join("frozen.json")).unwrap()).unwrap();
        record["guard_pid"].as_u64().unwrap() as u32
    });
    let agent_pid = agent.id();
    let pid = nix::unistd::Pid::from_raw(agent_pid as i32);
    let signalled = Instant::now();
    nix::sys::signal::kill(pid, signal).unwrap();

    // Nothing stays frozen past max_freeze, whatever the agent's state.
    let (since, limit) = match frozen_at {
        Some(t) => (t, MAX_FREEZE + SLACK),
        None => (signalled, SLACK),
    };
    for fs in [&a, &b] {
        let probe = WriteProbe::start(&fs.mountpoint);
        assert_writable_within(
            &probe,
            since,
            limit,
            &format!("{case}: {}", fs.mountpoint.display()),
        );
    }

    if signal == Signal::SIGSTOP {
        if let Some(guard) = guard {
            // The guard thaws, then tells the agent so: the probes above may see the thaw
            // before that word is out, and an agent resumed in between finds the filesystems
            // thawed by someone it cannot name.
            wait_until_guard_said_deadline_thaw(guard);
        }
        nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    }
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let history = || -> serde_json::Value {
        std::fs::read(dir.path().join("etc/history.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    if signal == Signal::SIGKILL {
        // What the unit's ExecStopPost runs.
        let thaw = Command::new(agent_bin())
            .arg("--config")
            .arg(&config)
            .arg("thaw")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&thaw.stdout);
        assert!(
            thaw.status.success(),
            "{case}: thaw failed: {text}{}",
            String::from_utf8_lossy(&thaw.stderr)
        );
        assert!(text.contains("50-app: thaw: done"), "{case}: {text}");
        // The guard left its note of the dead agent, which `thaw` counted into the history.
        let died = history()["totals"]["guard_agent_died_thaws"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(died, u64::from(frozen_at.is_some()), "{case}: {:#}", history());
    } else {
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{case}: no report ({e}): {stderr}"));
        let hooks = &report["quiescers"][0];
        assert_eq!(hooks["resumed"], true, "{case}: {report:#}");
        let error = report["error"].as_str().unwrap_or_default();
        match (signal, at) {
            // Interrupted before the snapshot registered: the run says so.
            (Signal::SIGTERM, At::Quiesce | At::AfterFreeze | At::Request) => {
                assert_eq!(report["status"], "failed", "{case}: {report:#}");
                assert!(
                    error.contains("interrupted") || error.contains("thaw guard"),
                    "{case}: {report:#}"
                );
            }
            // Stopped past max_freeze while frozen: the guard ended the freeze, and the result
            // never claims more than crash consistency for it.
            (Signal::SIGSTOP, At::AfterFreeze | At::Request) => {
                assert!(
                    report["status"] == "failed" || report["consistency"] == "crash",
                    "{case}: {report:#}"
                );
                assert!(
                    error.contains("guard")
                        || error.contains("max_freeze")
                        || error.contains("deadline")
                        || report["warnings"].to_string().contains("guard"),
                    "{case}: {report:#}"
                );
                assert_eq!(report["guard_event"], "deadline-thawed", "{case}: {report:#}");
                let totals = &history()["totals"];
                assert_eq!(totals["guard_deadline_thaws"], 1, "{case}: {totals:#}");
                assert_eq!(
                    totals["failed"].as_u64().unwrap_or(0) + totals["succeeded"].as_u64().unwrap_or(0),
                    1
                );
            }
            // Past the snapshot's registration, or before the freeze: the run completes.
            _ => assert_eq!(report["status"], "succeeded", "{case}: {report:#}"),
        }
    }

    // No hook outlived the run, nor anything a hook started: a `freeze` the run stopped waiting
    // for, or one cut short with a killed agent, must not race the `thaw` run after it.
    for marker in [
        hook.display().to_string(),
        format!("sleep 5.{mark}"),
        format!("sleep 4.{mark}"),
    ] {
        let survivors = processes_running(&marker);
        assert!(survivors.is_empty(), "{case}: {survivors:?}");
    }
    // The hook's `thaw` ran after its `freeze` started, and nothing is owed any more.
    let lines = hook_log(&log);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("thaw"),
        "{case}: hook log {lines:?}"
    );
    assert!(
        lines.iter().position(|l| l == "freeze-started") < lines.iter().position(|l| l == "thaw-started"),
        "{case}: {lines:?}"
    );
    assert!(
        !runtime.join("pending-resumes").exists(),
        "{case}: resumes still owed"
    );
    assert!(
        !runtime.join("frozen.json").exists(),
        "{case}: a frozen record is left"
    );
    writer.stop_and_check(&case);
    // The RCU knob is back to what it was. Another freeze on this machine (another test, run
    // alongside, held in its after-freeze pause for seconds) may hold it meanwhile, locked: it
    // puts its own value back. Still 1 and not held by another is a value left behind.
    if rcu_before.as_deref() == Some("0") {
        let deadline = Instant::now() + Duration::from_secs(5);
        while rcu_expedited().as_deref() != Some("0") && !rcu_held_by_another(agent_pid) {
            assert!(Instant::now() < deadline, "{case}: rcu_expedited left at 1");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `/sys/kernel/rcu_expedited` is locked by a freeze of another agent than `ours` (the
/// lock an agent takes while it changes the knob; `/proc/locks` names the process that took it,
/// which stays the agent's pid when its guard holds it after the agent died).
fn rcu_held_by_another(ours: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(knob) = std::fs::metadata("/sys/kernel/rcu_expedited") else {
        return false;
    };
    let id = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(knob.dev()),
        nix::sys::stat::minor(knob.dev()),
        knob.ino()
    );
    // `1: FLOCK  ADVISORY  WRITE 1234 00:16:3664 0 EOF`
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| {
            f.get(1) == Some(&"FLOCK")
                && f.get(5) == Some(&id.as_str())
                && f.get(4) != Some(&ours.to_string().as_str())
        })
}

#[test]
fn sigkill_at_each_phase_thaws_and_leaves_every_resume_to_thaw() {
    for at in PHASES {
        run_case(at, Signal::SIGKILL);
    }
}

/// Between the hook's spawn and the record of its process group: what the hook's `freeze` would
/// start could not be found by `thaw`, so the hook must not run until it is recorded.
#[test]
fn sigkill_before_a_hooks_group_is_recorded_leaves_nothing_of_it_running() {
    run_case(At::HookSpawned, Signal::SIGKILL);
}

/// The agent reads its guard's word, then is held (as a SIGSTOP would hold it) past the guard's
/// deadline thaw: its own FITHAWs then find nothing frozen, and it must still learn and report
/// that the guard thawed at the deadline, as the guard says a moment after its thaw.
#[test]
fn a_deadline_thaw_the_agent_learns_of_after_its_thaw_is_reported_and_counted() {
    let dir = scratch();
    let a = loop_fs(Fs::Ext4, 64, &dir.path().join("a.img"), &dir.path().join("a"));
    let config = dir.path().join("etc/config.toml");
    write_config(
        &config,
        &[&a.mountpoint],
        &dir.path().join("run"),
        &dir.path().join("images"),
        &format!("{}s", MAX_FREEZE.as_secs()),
    );
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--json"])
        .env(
            "FAILPOINTS",
            format!(
                "thaw-after-guard-check=sleep({})",
                (MAX_FREEZE + SLACK).as_millis()
            ),
        )
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["guard_event"], "deadline-thawed", "{report:#}");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("etc/history.json")).unwrap()).unwrap();
    assert_eq!(
        history["totals"]["guard_deadline_thaws"], 1,
        "{:#}",
        history["totals"]
    );
    assert!(!is_frozen(&a.mountpoint));
}

#[test]
fn sigterm_at_each_phase_winds_down_through_thaw_and_resume() {
    for at in PHASES {
        run_case(at, Signal::SIGTERM);
    }
}

#[test]
fn sigstop_at_each_phase_is_bounded_by_the_guard() {
    for at in PHASES {
        run_case(at, Signal::SIGSTOP);
    }
}
