//! The thaw guard: a process forked before the first FIFREEZE that thaws every target, in
//! reverse order, when the deadline passes or when the agent dies (SIGKILL included), so no
//! filesystem stays frozen past `max_freeze` whatever happens to the agent.
//!
//! The agent may be multi-threaded, so the forked child runs only async-signal-safe code: raw
//! syscalls on memory prepared before the fork, no allocation, no locks, no exec, no disk write
//! (but, after thawing, the unlink of the record in the runtime directory, and there the empty
//! note that says the agent died, which the run history counts).
//!
//! Protocol, one byte at a time over two pipes:
//! - guard → agent: `A` armed; `T` the deadline passed and the guard thawed everything.
//! - agent → guard: `D` the agent thawed everything itself, exit; `G` the agent gives up (it
//!   could not thaw everything, or it is unwinding): thaw everything and exit. End-of-file with
//!   neither means the agent died: thaw everything, leave the note, and exit.
//!
//! After a deadline thaw the guard keeps waiting for `D` or end-of-file and thaws again on
//! end-of-file, so a freeze that raced with the deadline is not left behind either.

pub(crate) mod record;

use crate::kernel::sys::fithaw;
use crate::transaction::ports::GuardEvent;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

const ARMED: u8 = b'A';
const DEADLINE_THAWED: u8 = b'T';
const DONE: u8 = b'D';
const GAVE_UP: u8 = b'G';

/// The start of the name of the guard's note, in the runtime directory, that it thawed for an
/// agent that died (`guard-died.<agent pid>.<nanoseconds>`).
pub(crate) const DIED_NOTE_PREFIX: &str = "guard-died.";

/// A running guard. Dropping it closes the control pipe, which makes the guard thaw and exit.
#[derive(Debug)]
pub(crate) struct Guard {
    pid: nix::unistd::Pid,
    control: Option<OwnedFd>,
    status: AsyncFd<OwnedFd>,
    event: Option<GuardEvent>,
}

/// Errors while starting the guard. Nothing is frozen when these happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    #[error("cannot create the thaw guard's pipes: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("cannot fork the thaw guard: {0}")]
    Fork(#[source] nix::Error),
    #[error("the thaw guard did not report that it is armed")]
    NotArmed,
}

impl Guard {
    /// Forks the guard. `fds` are open descriptors of the targets in freeze order; the guard
    /// thaws them in reverse. `record`, if given, is unlinked by the guard after it thaws, and
    /// the note that the agent died goes beside it.
    /// `rcu`, if given, is the locked `rcu_expedited` knob and the value the guard writes back
    /// when it thaws (see [`crate::kernel::rcu`]).
    ///
    /// Must be called from within a tokio runtime (the status pipe is watched with `AsyncFd`).
    pub(crate) fn arm(
        fds: &[RawFd],
        max_freeze: Duration,
        record: Option<&Path>,
        rcu: Option<(RawFd, u8)>,
    ) -> Result<Guard, GuardError> {
        use nix::fcntl::OFlag;
        let (control_r, control_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| GuardError::Pipe(e.into()))?;
        let (status_r, status_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| GuardError::Pipe(e.into()))?;
        // Everything the child touches is built here, before the fork.
        let died_note = record.and_then(|p| {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let note = p.with_file_name(format!("{DIED_NOTE_PREFIX}{}.{at}", std::process::id()));
            CString::new(note.as_os_str().as_bytes()).ok()
        });
        let record = record.and_then(|p| CString::new(p.as_os_str().as_bytes()).ok());
        let child = ChildArgs {
            control: control_r.as_raw_fd(),
            control_w: control_w.as_raw_fd(),
            status: status_w.as_raw_fd(),
            status_r: status_r.as_raw_fd(),
            fds: fds.as_ptr(),
            fd_count: fds.len(),
            max_freeze_ns: i64::try_from(max_freeze.as_nanos()).unwrap_or(i64::MAX),
            record: record.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            died_note: died_note.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            rcu_fd: rcu.map_or(-1, |(fd, _)| fd),
            rcu_previous: rcu.map_or(b'0', |(_, value)| value),
        };
        // SAFETY: the child runs only `guard_main`, which calls async-signal-safe functions on
        // memory that was prepared above and stays valid (the child has its own copy), and
        // leaves with `_exit` without returning into Rust code, unwinding or allocating.
        match unsafe { nix::unistd::fork() }.map_err(GuardError::Fork)? {
            nix::unistd::ForkResult::Child => {
                // SAFETY: see above; `child` points into memory copied into this process.
                unsafe { guard_main(&child) }
            }
            nix::unistd::ForkResult::Parent { child: pid } => {
                drop((control_r, status_w));
                let mut byte = [0u8; 1];
                // The guard writes `A` at once; wait for it without blocking forever.
                let mut pfd = [nix::poll::PollFd::new(
                    status_r.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let ready = loop {
                    match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)) {
                        Err(nix::Error::EINTR) => continue,
                        other => break other,
                    }
                };
                let armed = matches!(ready, Ok(1))
                    && matches!(nix::unistd::read(&status_r, &mut byte), Ok(1))
                    && byte[0] == ARMED;
                set_nonblocking(&status_r);
                // SAFETY: the AsyncFd owns `status_r`, which stays open, and the same descriptor, until
                // the AsyncFd is dropped.
                let status =
                    unsafe { AsyncFd::register_with_interest(status_r, tokio::io::Interest::READABLE) }
                        .map_err(|e| GuardError::Pipe(e.into()))?;
                let guard = Guard {
                    pid,
                    control: Some(control_w),
                    status,
                    event: None,
                };
                if !armed {
                    // Dropping the guard closes the pipe; a half-started guard then exits.
                    return Err(GuardError::NotArmed);
                }
                Ok(guard)
            }
        }
    }

    /// The guard's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// What the guard did on its own so far, without waiting.
    pub(crate) fn check(&mut self) -> Option<GuardEvent> {
        if self.event.is_none() {
            self.event = read_event(self.status.get_ref());
        }
        self.event
    }

    /// Waits (blocking, up to `wait`) for what the guard did on its own: for an agent that
    /// finds everything thawed past the guard's deadline, whose word follows its thaw.
    pub(crate) fn wait_for_event(&mut self, wait: Duration) -> Option<GuardEvent> {
        let until = std::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.check() {
                return Some(event);
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = [nix::poll::PollFd::new(
                self.status.get_ref().as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let _ = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms));
        }
    }

    /// Waits until the guard acts on its own: deadline thaw or death.
    pub(crate) async fn event(&mut self) -> GuardEvent {
        loop {
            if let Some(ev) = self.check() {
                return ev;
            }
            match self.status.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                // The fd is registered; an error here means the reactor is gone. Treat as death.
                Err(_) => return GuardEvent::Died,
            }
        }
    }

    /// Ends the guard: `D` if the agent thawed everything itself, otherwise `G` so the guard
    /// thaws too. Waits for the guard to exit.
    pub(crate) fn finish(mut self, all_thawed: bool) {
        if let Some(control) = self.control.take() {
            let _ = nix::unistd::write(&control, &[if all_thawed { DONE } else { GAVE_UP }]);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // `G` (if `finish` has not ended it) makes the guard thaw and exit; only an agent that
        // died closes the pipe without a word.
        if let Some(control) = self.control.take() {
            let _ = nix::unistd::write(&control, &[GAVE_UP]);
            drop(control);
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

/// Reads pending status bytes: `T` is a deadline thaw, end-of-file is death.
fn read_event(status: &OwnedFd) -> Option<GuardEvent> {
    let mut buf = [0u8; 16];
    loop {
        match nix::unistd::read(status, &mut buf) {
            Ok(0) => return Some(GuardEvent::Died),
            Ok(n) if buf[..n].contains(&DEADLINE_THAWED) => return Some(GuardEvent::DeadlineThawed),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// What the child needs, as plain values and pointers into memory prepared before the fork.
struct ChildArgs {
    control: RawFd,
    control_w: RawFd,
    status: RawFd,
    status_r: RawFd,
    fds: *const RawFd,
    fd_count: usize,
    max_freeze_ns: i64,
    record: *const libc::c_char,
    /// Where to note that the agent died (null: nowhere).
    died_note: *const libc::c_char,
    /// The `rcu_expedited` knob (-1: none) and the value to write back.
    rcu_fd: RawFd,
    rcu_previous: u8,
}

/// Now on CLOCK_BOOTTIME, the guard's clock, in nanoseconds. Async-signal-safe.
pub(crate) fn boottime_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec. CLOCK_BOOTTIME keeps counting during suspend,
    // so a suspended machine does not stretch the freeze.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec.saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec)
}

/// Thaws every target in reverse freeze order, ignoring errors (EINVAL: not frozen), then
/// restores `rcu_expedited` unless another freeze holds its lock by now.
///
/// # Safety
/// `args.fds` must point to `args.fd_count` descriptors.
unsafe fn thaw_all(args: &ChildArgs) {
    // SAFETY: guaranteed by the caller.
    let fds = unsafe { std::slice::from_raw_parts(args.fds, args.fd_count) };
    for &fd in fds.iter().rev() {
        let mut arg: libc::c_int = 0;
        // SAFETY: FITHAW takes an int it ignores; `arg` is valid for the call.
        let _ = unsafe { fithaw(fd, &mut arg) };
    }
    if !args.record.is_null() {
        // SAFETY: `record` is a NUL-terminated path prepared before the fork.
        unsafe { libc::unlink(args.record) };
    }
    // SAFETY: flock and pwrite on a descriptor inherited from the agent, with a one-byte buffer
    // that lives on this stack frame.
    unsafe {
        if args.rcu_fd >= 0 && libc::flock(args.rcu_fd, libc::LOCK_EX | libc::LOCK_NB) == 0 {
            libc::pwrite(args.rcu_fd, (&args.rcu_previous as *const u8).cast(), 1, 0);
        }
    }
}

/// The guard process. Never returns.
///
/// # Safety
/// Only to be called in a freshly forked child, with `args` prepared before the fork.
unsafe fn guard_main(args: &ChildArgs) -> ! {
    // SAFETY: all calls below are async-signal-safe syscalls on descriptors and memory owned by
    // this process; no allocation, no locks, no unwinding (`_exit` at every end).
    unsafe {
        libc::close(args.control_w);
        libc::close(args.status_r);
        // Signals aimed at the agent's process group (Ctrl-C, systemd's SIGTERM) must not take
        // the guard down before it thaws; the agent's exit (pipe EOF) is what ends it.
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::prctl(libc::PR_SET_NAME, c"ff-thaw-guard".as_ptr(), 0, 0, 0);
        let deadline = boottime_ns().saturating_add(args.max_freeze_ns);
        let mut deadline_passed = false;
        if libc::write(args.status, [ARMED].as_ptr().cast(), 1) != 1 {
            libc::_exit(3);
        }
        loop {
            let mut timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let timeout_ptr: *const libc::timespec = if deadline_passed {
                std::ptr::null()
            } else {
                let remaining = deadline - boottime_ns();
                if remaining <= 0 {
                    thaw_all(args);
                    deadline_passed = true;
                    libc::write(args.status, [DEADLINE_THAWED].as_ptr().cast(), 1);
                    continue;
                }
                timeout.tv_sec = remaining / 1_000_000_000;
                timeout.tv_nsec = remaining % 1_000_000_000;
                &timeout
            };
            let mut pfd = libc::pollfd {
                fd: args.control,
                events: libc::POLLIN,
                revents: 0,
            };
            let n = libc::ppoll(&mut pfd, 1, timeout_ptr, std::ptr::null());
            if n == 0 {
                continue;
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                thaw_all(args);
                libc::_exit(2);
            }
            let mut byte = 0u8;
            let r = libc::read(args.control, (&mut byte as *mut u8).cast(), 1);
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if r == 1 && byte == DONE {
                libc::_exit(0);
            }
            // The agent gave up, died (end-of-file), or said something unexpected: thaw.
            thaw_all(args);
            if r == 0 && !args.died_note.is_null() {
                // SAFETY: open and close on a NUL-terminated path prepared before the fork;
                // everything is thawed, so the note cannot land on a frozen filesystem.
                let fd = libc::open(
                    args.died_note,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o600,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            libc::_exit(0);
        }
    }
}
