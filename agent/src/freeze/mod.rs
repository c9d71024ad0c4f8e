//! Freezing filesystems: discovery and ordering ([`plan`]), the ioctls (in [`crate::kernel`]), and the live
//! implementation of [`crate::transaction::ports::Filesystems`], whose frozen state lives only inside a
//! [`FrozenSet`]: a value that thaws in `Drop` and exists only while the thaw guard is armed.

pub mod plan;
pub mod probe;

use crate::guard::record::{self, FrozenRecord, RecordedFilesystem};
use crate::guard::{Guard, GuardError};
use crate::kernel::{mountinfo, rcu, sys};
use crate::transaction::ports::{
    DevNum, Filesystems, FilesystemsError, FreezeOutcome, GuardEvent, MarkerRecord, ProbeMoment, Target,
    ThawReport,
};
use plan::{HostLookup, Plan, Selection};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long the probe's markers may take to write before the run goes on without them.
const MARK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent that found its guard's deadline thaw waits for the guard to say so.
const GUARD_WORD_WAIT: Duration = Duration::from_secs(2);

/// Reads this process's mountinfo and plans with the real host.
pub fn plan_from_system(selection: Selection<'_>) -> Result<Plan, PlanFromSystemError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(PlanFromSystemError::Read)?;
    let mounts = mountinfo::parse(&text)?;
    Ok(plan::plan(&mounts, selection, &RealHost)?)
}

/// The real host: sysfs for loop devices, stat for device numbers.
struct RealHost;

impl HostLookup for RealHost {
    fn loop_backing_file(&self, mount: &mountinfo::Mount) -> Option<PathBuf> {
        // mountinfo's device is the block device, except for btrfs (anonymous): ask the source.
        let dev = if mount.dev.major != 0 {
            mount.dev
        } else {
            DevNum::from_raw(nix::sys::stat::stat(mount.source.as_str()).ok()?.st_rdev)
        };
        let text = std::fs::read_to_string(format!("/sys/dev/block/{dev}/loop/backing_file")).ok()?;
        let path = text.trim_end_matches('\n');
        Some(PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)))
    }

    fn device_of(&self, path: &Path) -> Option<DevNum> {
        nix::sys::stat::stat(path)
            .ok()
            .map(|st| DevNum::from_raw(st.st_dev))
    }
}

/// Why this machine's plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanFromSystemError {
    /// The mount table could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Read(#[source] std::io::Error),
    /// The mount table has a line this parser does not understand.
    #[error(transparent)]
    Parse(#[from] mountinfo::ParseError),
    /// The configuration asks for something the mounts do not allow.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
}

/// Which target's filesystem holds the directory `path`, if any: the mount `path` is on,
/// compared by superblock.
pub(crate) fn target_holding(path: &Path, targets: &[Target]) -> std::io::Result<Option<PathBuf>> {
    let fd = sys::open_mountpoint(path)?;
    let mount_id = sys::mount_id_of(&fd)?;
    let mounts = mountinfo::parse(&std::fs::read_to_string("/proc/self/mountinfo")?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let Some(holder) = mounts.iter().find(|m| m.mount_id == mount_id) else {
        return Ok(None);
    };
    let same = |t: &Target| {
        if holder.fstype == "btrfs" || t.fstype == "btrfs" {
            holder.fstype == t.fstype && holder.source == t.source
        } else {
            holder.dev == t.dev
        }
    };
    Ok(targets.iter().find(|t| same(t)).map(|t| t.mountpoint.clone()))
}

/// Why freezing could not start or complete. When one of these is returned, nothing that this
/// run froze is frozen any more.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FreezeError {
    #[error("freezing filesystems needs CAP_SYS_ADMIN; run freezeframe-agent as root")]
    NotPermitted,
    #[error("cannot open {mountpoint}: {source}")]
    Open {
        mountpoint: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{mountpoint} is no longer the filesystem that was planned (mount {found:?}, planned mount {expected}); was it unmounted or mounted over? Run again")]
    MountChanged {
        mountpoint: PathBuf,
        expected: u64,
        found: Option<u64>,
    },
    #[error("cannot flush {mountpoint} (syncfs): {source}")]
    Sync {
        mountpoint: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{mountpoint} is already frozen by another process (FIFREEZE returned EBUSY); nothing was snapshotted and what this run froze was thawed at once. If a crashed tool left it frozen, thaw it with `fsfreeze --unfreeze {mountpoint}`")]
    AlreadyFrozen { mountpoint: PathBuf },
    #[error("cannot freeze {mountpoint}: {source}")]
    Freeze {
        mountpoint: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("the thaw guard stopped while freezing ({0:?}); everything was thawed")]
    GuardTripped(GuardEvent),
    #[error("cannot write the frozen-filesystem record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Filesystems in the frozen state. Dropping the value thaws them (reverse order), disarms the
/// guard, removes the record and releases held log output, in that order.
pub(crate) struct FrozenSet {
    /// Frozen by this run, in freeze order.
    frozen: Vec<(PathBuf, OwnedFd)>,
    guard: Option<Guard>,
    record_path: PathBuf,
    started: Instant,
    hold: Option<crate::log::Hold>,
    /// The guard thaws at this moment or later, on its clock (CLOCK_BOOTTIME, which counts a
    /// suspend too): it started counting after this was read.
    guard_deadline_ns: i64,
    /// When the last FIFREEZE returned, on the same clock, once every target froze.
    all_frozen_ns: Option<i64>,
}

impl FrozenSet {
    /// Whether the guard, at its deadline, thawed everything after the last freeze took hold:
    /// then nothing of ours is frozen, and a FITHAW now could only undo a freeze someone else
    /// made since. A freeze that raced with the deadline is thawed again.
    fn guard_thawed_all(&self, event: Option<GuardEvent>) -> bool {
        event == Some(GuardEvent::DeadlineThawed)
            && self.all_frozen_ns.is_some_and(|at| at < self.guard_deadline_ns)
    }

    fn thaw_now(&mut self) -> ThawReport {
        let mut guard_event = self.guard.as_mut().and_then(Guard::check);
        fault_point!("thaw-after-guard-check");
        if self.guard_thawed_all(guard_event) {
            self.frozen.clear();
        }
        let mut errors = Vec::new();
        let mut found_thawed = 0;
        let thaw_started = Instant::now();
        for (i, (mountpoint, fd)) in self.frozen.iter().rev().enumerate() {
            if i > 0 {
                fault_point!("between-thaws");
            }
            match sys::thaw(fd) {
                Ok(()) => {}
                // EINVAL: not frozen, because the guard thawed it at the deadline.
                Err(nix::Error::EINVAL) => found_thawed += 1,
                Err(e) => errors.push(format!("{}: {}", mountpoint.display(), e.desc())),
            }
        }
        let thawed_at = Instant::now();
        let (frozen_for, thawing) = (thawed_at - self.started, thawed_at - thaw_started);
        // All found thawed past the guard's deadline: the guard thawed them, and its word comes
        // a moment after its thaw (an agent resumed in between has not read it yet).
        if guard_event.is_none()
            && found_thawed > 0
            && found_thawed == self.frozen.len()
            && crate::guard::boottime_ns() >= self.guard_deadline_ns
        {
            guard_event = self
                .guard
                .as_mut()
                .and_then(|guard| guard.wait_for_event(GUARD_WORD_WAIT));
        }
        if let Some(guard) = self.guard.take() {
            guard.finish(errors.is_empty());
        }
        if errors.is_empty() {
            let _ = record::remove(&self.record_path);
        }
        self.frozen.clear();
        self.hold.take();
        ThawReport {
            frozen_for,
            thawing,
            guard_event,
            errors,
        }
    }
}

impl Drop for FrozenSet {
    fn drop(&mut self) {
        if self.guard.is_some() || !self.frozen.is_empty() {
            self.thaw_now();
        }
    }
}

/// The live filesystems of this machine, for the transaction.
pub struct LiveFilesystems {
    targets: Vec<Target>,
    opened: Vec<(Target, OwnedFd)>,
    record_path: PathBuf,
    frozen: Option<FrozenSet>,
    expedite_rcu: bool,
    /// Locked in preflight when grace periods can be expedited during the next freeze.
    rcu: Option<rcu::ExpeditedRcu>,
    /// Leave snapshot-point markers (`[freeze] probe`).
    probe: bool,
    /// A dry run's: preflight makes nothing (a missing runtime directory is one a run makes).
    checking_only: bool,
}

impl LiveFilesystems {
    /// `targets` in freeze order; the record goes into `runtime_dir`.
    pub fn new(targets: Vec<Target>, runtime_dir: &Path) -> Self {
        LiveFilesystems {
            targets,
            opened: Vec::new(),
            record_path: runtime_dir.join(record::RECORD_FILE),
            frozen: None,
            expedite_rcu: false,
            rcu: None,
            probe: false,
            checking_only: false,
        }
    }

    /// For a dry run: preflight checks, and makes nothing.
    pub(crate) fn checking_only(mut self) -> Self {
        self.checking_only = true;
        self
    }

    /// Whether to leave snapshot-point markers on the targets (`[freeze] probe`).
    pub fn with_probe(mut self, on: bool) -> Self {
        self.probe = on;
        self
    }

    /// Whether to expedite RCU grace periods while freezing (`[freeze] expedite_rcu`).
    pub(crate) fn with_rcu_expediting(mut self, on: bool) -> Self {
        self.expedite_rcu = on;
        self
    }

    /// FIFREEZE on each opened target in order, recording what froze in `set` and `outcome`.
    fn freeze_each(&self, set: &mut FrozenSet, outcome: &mut FreezeOutcome) -> Result<(), FreezeError> {
        for (target, fd) in &self.opened {
            if let Some(event) = set.guard.as_mut().and_then(Guard::check) {
                return Err(FreezeError::GuardTripped(event));
            }
            let fd = fd.try_clone().map_err(|e| FreezeError::Open {
                mountpoint: target.mountpoint.clone(),
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            match sys::freeze(&fd) {
                Ok(()) => {
                    set.frozen.push((target.mountpoint.clone(), fd));
                    outcome.frozen.push(target.clone());
                }
                Err(nix::Error::EOPNOTSUPP) => outcome.not_supported.push(target.clone()),
                Err(nix::Error::EBUSY) => {
                    return Err(FreezeError::AlreadyFrozen {
                        mountpoint: target.mountpoint.clone(),
                    })
                }
                Err(source) => {
                    return Err(FreezeError::Freeze {
                        mountpoint: target.mountpoint.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn dup_fds(&self) -> Result<Vec<(PathBuf, OwnedFd)>, FreezeError> {
        self.opened
            .iter()
            .map(|(t, fd)| {
                fd.try_clone()
                    .map(|fd| (t.mountpoint.clone(), fd))
                    .map_err(|e| FreezeError::Open {
                        mountpoint: t.mountpoint.clone(),
                        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    })
            })
            .collect()
    }
}

impl LiveFilesystems {
    /// Makes the runtime directory if needed, and checks the record can be written there.
    fn runtime_dir_writable(&self, runtime_dir: &Path) -> Result<(), FreezeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime_dir)
            .and_then(|()| {
                nix::unistd::access(runtime_dir, nix::unistd::AccessFlags::W_OK).map_err(Into::into)
            })
            .map_err(|source| FreezeError::Record {
                path: self.record_path.clone(),
                source,
            })
    }

    /// Opens every target and checks it is still the filesystem that was planned.
    fn open_targets(&mut self) -> Result<(), FreezeError> {
        if !sys::can_freeze() {
            return Err(FreezeError::NotPermitted);
        }
        // The record is written right before the first FIFREEZE; make sure it can be.
        let runtime_dir = self.record_path.parent().unwrap_or(Path::new("/"));
        let made_by_the_run = self.checking_only && !runtime_dir.exists();
        if !made_by_the_run {
            self.runtime_dir_writable(runtime_dir)?;
        }
        self.opened.clear();
        // Mount ids are reused: a mount that replaced a planned one may carry its id, so the
        // filesystem behind the id is compared too.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|text| mountinfo::parse(&text).ok())
            .unwrap_or_default();
        for t in &self.targets {
            let fd = sys::open_mountpoint(&t.mountpoint).map_err(|source| FreezeError::Open {
                mountpoint: t.mountpoint.clone(),
                source,
            })?;
            let found = sys::mount_id_of(&fd).ok();
            let same_filesystem = mounts.iter().any(|m| {
                Some(m.mount_id) == found && m.dev == t.dev && m.fstype == t.fstype && m.source == t.source
            });
            if found != Some(t.mount_id) || !same_filesystem {
                return Err(FreezeError::MountChanged {
                    mountpoint: t.mountpoint.clone(),
                    expected: t.mount_id,
                    found,
                });
            }
            self.opened.push((t.clone(), fd));
        }
        self.rcu = None;
        if self.expedite_rcu {
            match rcu::ExpeditedRcu::prepare() {
                Ok(knob) => self.rcu = Some(knob),
                Err(rcu::NotExpedited::Already) => {}
                Err(why) => tracing::info!("RCU grace periods not expedited, freezing takes longer: {why}"),
            }
        }
        Ok(())
    }

    async fn sync_targets(&self) -> Result<(), FreezeError> {
        let fds = self.dup_fds()?;
        crate::blocking::run(move || {
            for (mountpoint, fd) in &fds {
                nix::unistd::syncfs(fd).map_err(|source| FreezeError::Sync {
                    mountpoint: mountpoint.clone(),
                    source,
                })?;
            }
            Ok(())
        })
        .await
    }

    /// Arms the guard, writes the record, then freezes in plan order.
    fn freeze_targets(&mut self, max_freeze: Duration) -> Result<FreezeOutcome, FreezeError> {
        let raw: Vec<RawFd> = self.opened.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        let armed_at = Instant::now();
        let guard_deadline_ns = crate::guard::boottime_ns()
            .saturating_add(i64::try_from(max_freeze.as_nanos()).unwrap_or(i64::MAX));
        let rcu = self.rcu.take();
        let guard = Guard::arm(
            &raw,
            max_freeze,
            Some(&self.record_path),
            rcu.as_ref().map(rcu::ExpeditedRcu::for_guard),
        )?;
        let rec = FrozenRecord {
            agent_pid: std::process::id(),
            guard_pid: guard.pid(),
            frozen_at_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_freeze,
            filesystems: self
                .opened
                .iter()
                .map(|(t, _)| RecordedFilesystem::new(&t.mountpoint, t.mount_id, t.dev))
                .collect(),
        };
        // Written before the first FIFREEZE: the runtime directory may sit on a target.
        record::write(&self.record_path, &rec).map_err(|source| FreezeError::Record {
            path: self.record_path.clone(),
            source,
        })?;

        let mut set = FrozenSet {
            frozen: Vec::with_capacity(self.opened.len()),
            guard: Some(guard),
            record_path: self.record_path.clone(),
            started: Instant::now(),
            hold: Some(crate::log::hold()),
            guard_deadline_ns,
            all_frozen_ns: None,
        };
        let mut outcome = FreezeOutcome {
            guard_armed_at: Some(armed_at),
            ..FreezeOutcome::default()
        };
        if let Some(knob) = &rcu {
            knob.expedite();
        }
        let frozen = self.freeze_each(&mut set, &mut outcome);
        outcome.freezing = set.started.elapsed();
        if frozen.is_ok() {
            set.all_frozen_ns = Some(crate::guard::boottime_ns());
        }
        fault_point!("after-freeze");
        if let Some(knob) = rcu {
            knob.restore();
        }
        frozen?; // on error `set` thaws on drop
        if set.frozen.is_empty() {
            drop(set);
        } else {
            self.frozen = Some(set);
        }
        Ok(outcome)
    }
}

#[async_trait::async_trait]
impl Filesystems for LiveFilesystems {
    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn preflight(&mut self) -> Result<(), FilesystemsError> {
        self.open_targets().map_err(FilesystemsError::new)
    }

    async fn sync(&mut self) -> Result<(), FilesystemsError> {
        self.sync_targets().await.map_err(FilesystemsError::new)
    }

    fn freeze(&mut self, max_freeze: Duration) -> Result<FreezeOutcome, FilesystemsError> {
        self.freeze_targets(max_freeze).map_err(FilesystemsError::new)
    }

    async fn guard_tripped(&mut self) -> GuardEvent {
        match self.frozen.as_mut().and_then(|f| f.guard.as_mut()) {
            Some(guard) => guard.event().await,
            None => std::future::pending().await,
        }
    }

    fn mark(&mut self, snapshot: &str, moment: ProbeMoment, record: &MarkerRecord) -> Vec<String> {
        if !self.probe || self.frozen.is_some() {
            return Vec::new();
        }
        let dirs: Vec<PathBuf> = self
            .targets
            .iter()
            .map(|t| probe::probe_dir(t, &self.targets))
            .collect();
        // A filesystem someone else froze blocks the first write into it, in the kernel and
        // past any signal: the markers are written by a thread of their own, and the run does
        // not wait for it long (its freeze then fails with EBUSY, naming the filesystem).
        let (done, written) = std::sync::mpsc::channel();
        let (todo, snapshot, record) = (dirs.clone(), snapshot.to_string(), record.clone());
        std::thread::spawn(move || {
            for dir in todo {
                let result = probe::mark(&dir, &snapshot, moment, &record);
                if done.send((dir, result)).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + MARK_TIMEOUT;
        let unmarked = |dir: &Path, problem: String| {
            format!(
                "the snapshot-point probe could not leave its `{}` marker in {}: {problem}",
                moment.as_str(),
                dir.display()
            )
        };
        let mut warnings = Vec::new();
        for dir in &dirs {
            match written.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => warnings.push(unmarked(dir, e.to_string())),
                Err(_) => {
                    warnings.push(unmarked(
                        dir,
                        format!(
                            "it was not written within {} s (is the filesystem frozen by another process?)",
                            MARK_TIMEOUT.as_secs()
                        ),
                    ));
                    break;
                }
            }
        }
        warnings
    }

    fn thaw(&mut self) -> ThawReport {
        match self.frozen.take() {
            Some(mut set) => set.thaw_now(),
            None => ThawReport::default(),
        }
    }
}
