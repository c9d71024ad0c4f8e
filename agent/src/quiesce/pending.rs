//! Resumes owed, recorded in the runtime directory: each entry is written before its `prepare`
//! starts and removed once its `resume` ran. An agent killed in between (SIGKILL, OOM) cannot
//! resume anything itself, so `freezeframe-agent thaw` (the unit's ExecStopPost) and the next
//! run do it from this record, in reverse order, after the filesystems are thawed.
//!
//! Only what outlives the agent is recorded: units frozen or stopped through systemd, containers
//! paused through their engine, and hooks (whose `thaw` nothing else would run), with what a
//! hook's `freeze` left running. A MariaDB lock session ends with the agent by itself;
//! PostgreSQL's CHECKPOINT and Redis's BGSAVE leave nothing to undo.
//!
//! Every change to the record is written by one thread, in the order asked, and its caller waits
//! for it at most [`WRITE_BOUND`]: on tmpfs a write takes microseconds, but a runtime directory
//! on a filesystem that hangs (a network mount, one someone froze) must not hang the run with it.

use super::process_group::ProcessGroup;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The record's file name in the runtime directory.
pub(crate) const PENDING_FILE: &str = "pending-resumes";

/// One resume owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A unit frozen with FreezeUnit: thaw it.
    FrozenUnit(String),
    /// A unit stopped with StopUnit: start it.
    StoppedUnit(String),
    /// A hook whose `freeze` started: run it with `thaw`, after ending what is left of the
    /// hook's `freeze` or `thaw` that was `running` when the agent died.
    Hook { path: PathBuf, running: Option<Running> },
    /// What a hook's `freeze` left running when it exited (a lock session held until `thaw`):
    /// after the hook's `thaw`, end what is left of it.
    HookLeft { path: PathBuf, left: Running },
    /// A container paused through the engine at `socket`: unpause it.
    PausedContainer { id: String, socket: PathBuf },
}

/// Where a hook runs, while it runs: what a resume for a dead agent ends before its `thaw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Running {
    /// Spawned by the agent: its process group.
    Group(ProcessGroup),
    /// A transient systemd service: stopping it ends all it started.
    Unit(String),
}

impl Pending {
    fn to_line(&self) -> String {
        match self {
            Pending::FrozenUnit(unit) => format!("thaw-unit {unit}"),
            Pending::StoppedUnit(unit) => format!("start-unit {unit}"),
            Pending::PausedContainer { id, socket } => format!("unpause-container {id} {}", socket.display()),
            Pending::Hook { path, running: None } => format!("hook {}", path.display()),
            Pending::Hook {
                path,
                running: Some(Running::Group(group)),
            } => format!("hook-running {group} {}", path.display()),
            Pending::Hook {
                path,
                running: Some(Running::Unit(unit)),
            } => format!("hook-unit {unit} {}", path.display()),
            Pending::HookLeft {
                path,
                left: Running::Group(group),
            } => format!("hook-left {group} {}", path.display()),
            Pending::HookLeft {
                path,
                left: Running::Unit(unit),
            } => format!("hook-left-unit {unit} {}", path.display()),
        }
    }

    /// A hook entry with nothing running.
    pub(crate) fn hook(path: PathBuf) -> Pending {
        Pending::Hook { path, running: None }
    }

    /// Whether `other` stands for the same resume (a hook's running group aside).
    fn same_resume(&self, other: &Pending) -> bool {
        match (self, other) {
            (Pending::Hook { path: a, .. }, Pending::Hook { path: b, .. })
            | (Pending::HookLeft { path: a, .. }, Pending::HookLeft { path: b, .. }) => a == b,
            _ => self == other,
        }
    }

    /// Whether this entry is owed for hook `hook` (its `thaw`, or what its `freeze` left).
    pub(crate) fn of_hook(&self, hook: &Path) -> bool {
        matches!(self, Pending::Hook { path, .. } | Pending::HookLeft { path, .. } if path == hook)
    }

    fn from_line(line: &str) -> Option<Pending> {
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "thaw-unit" => Some(Pending::FrozenUnit(rest.into())),
            "start-unit" => Some(Pending::StoppedUnit(rest.into())),
            "unpause-container" => {
                let (id, socket) = rest.split_once(' ')?;
                Some(Pending::PausedContainer {
                    id: crate::container::valid_id(id)?,
                    socket: socket.into(),
                })
            }
            "hook" => Some(Pending::hook(rest.into())),
            "hook-running" => {
                let (group, path) = rest.split_once(' ')?;
                Some(Pending::Hook {
                    path: path.into(),
                    running: Some(Running::Group(group.parse().ok()?)),
                })
            }
            "hook-unit" => {
                let (unit, path) = rest.split_once(' ')?;
                Some(Pending::Hook {
                    path: path.into(),
                    running: Some(Running::Unit(unit.into())),
                })
            }
            "hook-left" => {
                let (group, path) = rest.split_once(' ')?;
                Some(Pending::HookLeft {
                    path: path.into(),
                    left: Running::Group(group.parse().ok()?),
                })
            }
            "hook-left-unit" => {
                let (unit, path) = rest.split_once(' ')?;
                Some(Pending::HookLeft {
                    path: path.into(),
                    left: Running::Unit(unit.into()),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pending::FrozenUnit(unit) => write!(f, "{unit} (frozen): thaw"),
            Pending::StoppedUnit(unit) => write!(f, "{unit} (stopped): start"),
            Pending::PausedContainer { id, .. } => {
                write!(
                    f,
                    "container {} (paused): unpause",
                    id.chars().take(12).collect::<String>()
                )
            }
            Pending::Hook { path, .. } => write!(f, "hook {}: thaw", path.display()),
            Pending::HookLeft { path, .. } => {
                write!(f, "hook {}: end what its freeze left running", path.display())
            }
        }
    }
}

fn path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(PENDING_FILE)
}

/// What the record lists, in the order the prepares started.
pub(crate) fn recorded(runtime_dir: &Path) -> Vec<Pending> {
    std::fs::read_to_string(path(runtime_dir))
        .map(|t| t.lines().filter_map(Pending::from_line).collect())
        .unwrap_or_default()
}

fn write(runtime_dir: &Path, entries: &[Pending]) -> std::io::Result<()> {
    fault_point!("pending-write");
    if entries.is_empty() {
        return match std::fs::remove_file(path(runtime_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text: String = entries.iter().map(|e| e.to_line() + "\n").collect();
    crate::atomic_file::replace(&path(runtime_dir), text.as_bytes(), 0o600)
}

/// Records `entry` before its prepare starts, or updates it in place (a hook's running group).
/// An entry that cannot be written on one line (a hook path with a newline) is refused, so it
/// is never prepared unrecorded.
pub(crate) fn add(runtime_dir: &Path, entry: Pending) -> std::io::Result<()> {
    add_all(runtime_dir, vec![entry])
}

/// [`add`] for each of `entries`, in one write: an agent killed meanwhile leaves all of them
/// recorded or none.
pub(crate) fn add_all(runtime_dir: &Path, entries: Vec<Pending>) -> std::io::Result<()> {
    if let Some(entry) = entries.iter().find(|e| e.to_line().contains('\n')) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{entry:?} has a newline in its name"),
        ));
    }
    let dir = runtime_dir.to_path_buf();
    RecordWriter::global().write(WRITE_BOUND, move || {
        let mut recorded = recorded(&dir);
        for entry in entries {
            match recorded.iter_mut().find(|e| e.same_resume(&entry)) {
                Some(found) => *found = entry,
                None => recorded.push(entry),
            }
        }
        write(&dir, &recorded)
    })
}

/// Forgets `entry` once its resume ran.
pub(crate) fn remove(runtime_dir: &Path, entry: &Pending) -> std::io::Result<()> {
    let entry = entry.clone();
    forget(runtime_dir, move |e| e.same_resume(&entry))
}

/// Forgets every entry owed for hook `hook` once its `thaw` ran: the hook, and what its `freeze`
/// left running.
pub(crate) fn remove_hook(runtime_dir: &Path, hook: &Path) -> std::io::Result<()> {
    let hook = hook.to_path_buf();
    forget(runtime_dir, move |e| e.of_hook(&hook))
}

fn forget(runtime_dir: &Path, which: impl Fn(&Pending) -> bool + Send + 'static) -> std::io::Result<()> {
    let dir = runtime_dir.to_path_buf();
    RecordWriter::global().write(WRITE_BOUND, move || {
        let kept: Vec<Pending> = recorded(&dir).into_iter().filter(|e| !which(e)).collect();
        write(&dir, &kept)
    })
}

/// How long a caller waits for its change to the record.
pub(crate) const WRITE_BOUND: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

/// A lock, taken whatever a holder that panicked left (a count stays a count).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One thread that makes the record's changes one at a time, in the order they were asked for,
/// so a change whose caller stopped waiting still lands before the ones asked after it.
struct RecordWriter {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// How many changes their callers gave up waiting for are still unmade.
    overdue: Arc<Mutex<usize>>,
}

impl RecordWriter {
    fn global() -> &'static RecordWriter {
        static WRITER: OnceLock<RecordWriter> = OnceLock::new();
        WRITER.get_or_init(RecordWriter::start)
    }

    fn start() -> RecordWriter {
        let (jobs, queue) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("pending-record".into())
            .spawn(move || queue.into_iter().for_each(|job| job()));
        if let Err(e) = spawned {
            // With no thread, every change fails (its job is dropped unmade) and says so.
            tracing::warn!("cannot start the thread that writes the record of resumes owed: {e}");
        }
        RecordWriter {
            jobs: Mutex::new(jobs),
            overdue: Arc::new(Mutex::new(0)),
        }
    }

    /// Makes `change` after the changes asked before it, and waits for it up to `bound`. A
    /// change not made by then is still made, in its turn, if the directory ever answers. While
    /// one is overdue, the ones asked after it fail at once (the directory hangs) rather than
    /// each waiting its own `bound`.
    fn write(
        &self,
        bound: Duration,
        change: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<()> {
        let timed_out = || {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the runtime directory did not take the change within {} (is it on a \
                     filesystem that hangs?)",
                    humantime::format_duration(bound)
                ),
            )
        };
        let gone = || std::io::Error::other("the record's writer is gone");
        let given_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done, result) = mpsc::sync_channel(1);
        let (overdue, mine) = (self.overdue.clone(), given_up.clone());
        let job: Job = Box::new(move || {
            let made = change();
            // Under the lock: its caller either takes the result or has counted it overdue.
            let mut overdue = lock(&overdue);
            if mine.load(Ordering::SeqCst) {
                *overdue -= 1;
            } else {
                let _ = done.send(made);
            }
        });
        {
            let mut overdue = lock(&self.overdue);
            if *overdue > 0 {
                given_up.store(true, Ordering::SeqCst);
                *overdue += 1;
                drop(overdue);
                let sent = lock(&self.jobs).send(job);
                if sent.is_err() {
                    *lock(&self.overdue) -= 1;
                    return Err(gone());
                }
                return Err(timed_out());
            }
        }
        if lock(&self.jobs).send(job).is_err() {
            return Err(gone());
        }
        match result.recv_timeout(bound) {
            Ok(made) => made,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut overdue = lock(&self.overdue);
                if let Ok(made) = result.try_recv() {
                    return made;
                }
                given_up.store(true, Ordering::SeqCst);
                *overdue += 1;
                Err(timed_out())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_recorded_in_order_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded(dir.path()).is_empty());
        let a = Pending::FrozenUnit("a.service".into());
        let b = Pending::StoppedUnit("b.service".into());
        let h = Pending::hook("/etc/freezeframe/hooks.d/10 db".into());
        for e in [&a, &b, &h, &a] {
            add(dir.path(), e.clone()).unwrap();
        }
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), h.clone()]);
        // A hook's running group is recorded in its place, and read back.
        let running = Pending::Hook {
            path: "/etc/freezeframe/hooks.d/10 db".into(),
            running: Some(Running::Group("4242:123456".parse().unwrap())),
        };
        add(dir.path(), running.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), running]);
        let running = Pending::Hook {
            path: "/etc/freezeframe/hooks.d/10 db".into(),
            running: Some(Running::Unit("freezeframe-hook-10-db-freeze-1-1.service".into())),
        };
        add(dir.path(), running.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), running]);
        add(dir.path(), h.clone()).unwrap();
        assert_eq!(recorded(dir.path()), [a.clone(), b.clone(), h.clone()]);
        remove(dir.path(), &a).unwrap();
        remove(dir.path(), &b).unwrap();
        assert_eq!(recorded(dir.path()), std::slice::from_ref(&h));
        remove(dir.path(), &h).unwrap();
        assert!(!path(dir.path()).exists(), "an empty record is no file");
        assert!(add(dir.path(), Pending::hook("/x\nthaw-unit y".into())).is_err());
        assert!(recorded(dir.path()).is_empty());
    }

    #[test]
    fn hook_left_entries_are_read_back_and_old_records_still_read() {
        let dir = tempfile::tempdir().unwrap();
        // A record written before `hook-left` existed.
        std::fs::write(
            path(dir.path()),
            "thaw-unit a.service\nhook /h/10 db\nhook-running 4242:99 /h/20\nhook-unit u.service /h/30\n",
        )
        .unwrap();
        let old = recorded(dir.path());
        assert_eq!(old.len(), 4, "{old:?}");
        let left = Pending::HookLeft {
            path: "/h/10 db".into(),
            left: Running::Group("4243:100".parse().unwrap()),
        };
        let left_unit = Pending::HookLeft {
            path: "/h/30".into(),
            left: Running::Unit("freezeframe-hook-30-freeze-1-2.service".into()),
        };
        add_all(
            dir.path(),
            vec![Pending::hook("/h/20".into()), left.clone(), left_unit.clone()],
        )
        .unwrap();
        let now = recorded(dir.path());
        assert_eq!(
            now[..4],
            [
                old[0].clone(),
                old[1].clone(),
                Pending::hook("/h/20".into()),
                old[3].clone()
            ]
        );
        assert_eq!(now[4..], [left.clone(), left_unit]);
        remove_hook(dir.path(), Path::new("/h/10 db")).unwrap();
        assert!(!recorded(dir.path())
            .iter()
            .any(|e| e.of_hook(Path::new("/h/10 db"))));
        assert_eq!(recorded(dir.path()).len(), 4);
    }

    #[test]
    fn a_change_that_hangs_is_given_up_on_and_the_later_ones_are_made_after_it() {
        let writer = RecordWriter::start();
        let made = Arc::new(Mutex::new(Vec::new()));
        let change = |n: u32, hold: Option<mpsc::Receiver<()>>| {
            let made = made.clone();
            move || {
                if let Some(hold) = hold {
                    let _ = hold.recv();
                }
                made.lock().unwrap().push(n);
                Ok(())
            }
        };
        let (release, hold) = mpsc::channel();
        let bound = Duration::from_millis(50);
        let err = writer.write(bound, change(1, Some(hold))).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        // While the first is overdue, the next fails at once, whatever its bound.
        let err = writer
            .write(Duration::from_secs(3600), change(2, None))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(made.lock().unwrap().is_empty());
        release.send(()).unwrap();
        // Once both are made, nothing is overdue and a change is waited for again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while *writer.overdue.lock().unwrap() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first two were never made"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.write(Duration::from_secs(3600), change(3, None)).unwrap();
        assert_eq!(*made.lock().unwrap(), [1, 2, 3], "made in the order asked");
    }
}
