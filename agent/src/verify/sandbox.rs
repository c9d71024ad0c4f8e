//! Where a database from an image runs: as an identity that owns nothing on this machine, in a
//! sandbox of its own. An image may come from a compromised machine, and a database runs code
//! its data names (settings, C functions, event triggers, index expressions), so whatever the
//! image holds must not reach any real account here, let alone root.
//!
//! The identity is a uid and gid of a reserved range (`identity`), one of its own for each
//! verify, which no account on the verifier has (it is checked): not the image's owner of the
//! data (the image chooses that number, and it may be a local account here), not a system user
//! that owns files. The image's owner is mapped to it by
//! an idmapped mount of the database's folder (a user namespace holding just that mapping, whose
//! only use is the mount), and a copy-on-write overlay on that mount, its upper folder owned by
//! the identity, takes the server's writes. So the server owns its data, and nothing else.
//!
//! Every program of a check (the server, its clients, the dump checker) starts through
//! `Sandbox::command`: a mount namespace of its own in which everything is read-only and
//! `nosuid,nodev` except the overlay (data), a folder for its socket (`run`) and a private
//! `/tmp`, all `noexec`; `/dev` holds only null, zero, full, random and urandom; its own network
//! namespace (nothing but a loopback that is down: the server listens on its Unix socket only),
//! IPC and UTS namespaces; `/etc/passwd` and `/etc/group` name only the identity; no capability,
//! `NO_NEW_PRIVS` (no setuid or file capability raises it), no core dumps; killed when verify
//! dies, and after a hard time limit (`LIFETIME`) whatever it is doing; and whatever it leaves
//! running is verify's to reap (`adopt_orphans`) and killed after each check (`kill_leftovers`).

use super::inside::Root;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The range the sandboxes' identities come from: in the one systemd leaves unused
/// (0x70000000–0x7FFDFFFF: above container ranges, below the "foreign" range), so that no
/// account, container or dynamic user has them; `Confined::prepare` refuses to run if one does.
/// Each verify takes a slot of two ids (its identity, and `aside`), so that two verifies at once
/// (two images, one perhaps hostile) never run as the same uid, which could trace or reach into
/// the other's sandbox.
const RANGE_START: u32 = 0x7FF0_0000;
const SLOTS: u32 = 0x8000;

/// The uid and gid every program this verify starts from an image runs as: a slot no running
/// process uses, looked for from one its pid picks (a verify starting at the same instant
/// could pick the same; the slot is held by its processes after that).
pub(crate) fn identity() -> u32 {
    static IDENTITY: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *IDENTITY.get_or_init(|| {
        let in_use = uids_in_use();
        let first = std::process::id() % SLOTS;
        (0..SLOTS)
            .map(|n| RANGE_START + 2 * ((first + n) % SLOTS))
            .find(|uid| !in_use.contains(uid) && !in_use.contains(&(uid + 1)))
            .unwrap_or(RANGE_START + 2 * first)
    })
}

/// A second gid of the slot, which no process has: the group of a database's folder when it is
/// not its files' group.
fn aside() -> u32 {
    identity() + 1
}

/// The uids of every running process.
fn uids_in_use() -> std::collections::HashSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            line.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The longest any program of a check may live (a server, from its start to its stop, or one
/// client): killed then, whatever it does. Recovery may take minutes and counting a large
/// database hours; a server that never ends must not hold the verifier forever.
pub(crate) const LIFETIME: Duration = Duration::from_secs(6 * 60 * 60);

/// Where the sandbox shows the data (the overlay), the socket folder, and verify's files.
pub(crate) const DATA: &str = "/tmp/data";
pub(crate) const RUN: &str = "/tmp/run";
pub(crate) const ETC: &str = "/tmp/etc";

/// Why a database's or a tool's sandbox could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    /// The identity the sandbox runs as is an account here, and would own something.
    #[error(
        "uid or gid {0} is an account on this machine, so a database from an image cannot run \
         as an identity that owns nothing here: remove that account"
    )]
    IdentityTaken(u32),
    /// A folder of the image could not be opened or read.
    #[error("cannot {action} {} in the image: {source}", path.display())]
    Image {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file or folder of verify's own could not be made or read.
    #[error("cannot {action} {}: {source}", path.display())]
    Own {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A folder could not be given to the sandbox's identity.
    #[error("cannot give {} to uid {id}: {source}", path.display())]
    Chown {
        path: PathBuf,
        id: u32,
        source: nix::Error,
    },
    /// A path with a NUL byte, which no system call takes.
    #[error(transparent)]
    Nul(#[from] std::ffi::NulError),
    /// The idmapped mount's tree could not be cloned.
    #[error("cannot clone the database's folder for an idmapped mount: {0}")]
    Clone(#[source] std::io::Error),
    /// The kernel or the filesystem has no idmapped mounts.
    #[error(
        "cannot map the image's owner of the database to uid {id} (idmapped mounts need Linux \
         5.12 and a filesystem that supports them): {source}"
    )]
    Idmap { id: u32, source: std::io::Error },
    /// The idmapped mount could not be put in place.
    #[error("cannot mount the database's folder at {}: {source}", target.display())]
    Move { target: PathBuf, source: std::io::Error },
    /// No user namespace to map the owner in.
    #[error("cannot make a user namespace for the idmapped mount: {0}")]
    UserNamespace(#[source] std::io::Error),
    /// The owner's mapping could not be written.
    #[error("cannot map uid {uid} to {id} in a user namespace: {source}")]
    Map {
        uid: u32,
        id: u32,
        source: std::io::Error,
    },
    /// No overlay: nothing to recover on without changing the image.
    #[error(
        "cannot mount a copy-on-write overlay on the database's folder ({0}): it needs one to \
         recover without changing the image (is overlayfs in this kernel?)"
    )]
    Overlay(#[source] nix::Error),
    /// losetup is missing.
    #[error("cannot run losetup: {0}")]
    NoLosetup(#[source] std::io::Error),
    /// The image could not be attached read-only.
    #[error("cannot attach {} to a read-only loop device: {said}", image.display())]
    Attach { image: PathBuf, said: String },
}

/// `action` on `path`, a file or folder of verify's own, failed.
fn own(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Own { action, path, source }
}

/// `action` on `path`, in the image, failed.
fn in_image(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Image { action, path, source }
}

/// A database's folder from the image, prepared for its server: the image's owner mapped to
/// `identity()` on a read-only idmapped mount, an overlay on it for the writes, a socket folder,
/// and verify's own files (settings, passwd); all unmounted on drop.
#[derive(Debug)]
pub(crate) struct Confined {
    dir: PathBuf,
    lower: PathBuf,
    merged: PathBuf,
    etc: PathBuf,
    /// The image's owner of the folder (uid), as the image numbers it.
    pub(crate) image_owner: u32,
    sandbox: Sandbox,
}

impl Confined {
    /// Prepares the folder `rel` of the image whose top is `root`, under `dir` (a folder of
    /// verify's own, created here); the owner of `owned` (inside `rel`: the database's own
    /// files, whose owner the server must be) is the one mapped to `identity()`.
    pub(crate) fn prepare(
        root: &Root,
        rel: &Path,
        owned: &Path,
        dir: &Path,
    ) -> Result<Confined, SandboxError> {
        let id = identity();
        if nix::unistd::User::from_uid(id.into()).ok().flatten().is_some()
            || nix::unistd::Group::from_gid(id.into()).ok().flatten().is_some()
        {
            return Err(SandboxError::IdentityTaken(id));
        }
        let source = root
            .resolve(rel, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(in_image("open", rel))?;
        let (_, top_gid, mode) = root.owner(rel).map_err(in_image("read", rel))?;
        let (uid, gid, _) = root.owner(owned).map_err(in_image("read", owned))?;
        let [lower, upper, work, merged, run, etc] =
            ["lower", "upper", "work", "merged", "run", "etc"].map(|d| dir.join(d));
        for (path, mode) in [
            (dir, 0o700),
            (&lower, 0o700),
            (&upper, mode & 0o750),
            (&work, 0o700),
            (&merged, 0o700),
            (&run, 0o700),
            (&etc, 0o755),
        ] {
            std::fs::create_dir_all(path)
                .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
                .map_err(own("create", path))?;
        }
        // The overlay's top is its upper folder: the server's own, as its data directory must be.
        for path in [&upper, &run] {
            nix::unistd::chown(path, Some(id.into()), Some(id.into())).map_err(|source| {
                SandboxError::Chown {
                    path: path.to_path_buf(),
                    id,
                    source,
                }
            })?;
        }
        let identity = "freezeframe-verify";
        std::fs::write(
            etc.join("passwd"),
            format!("{identity}:x:{id}:{id}::/nonexistent:/usr/sbin/nologin\n"),
        )
        .and_then(|()| std::fs::write(etc.join("group"), format!("{identity}:x:{id}:\n")))
        .map_err(own("write into", &etc))?;
        let mut confined = Confined {
            dir: dir.to_path_buf(),
            lower: PathBuf::new(),
            merged: PathBuf::new(),
            sandbox: Sandbox::new(&merged, &run, &etc)?,
            etc,
            image_owner: uid,
        };
        idmapped_mount(&source, (uid, gid, top_gid), &lower)?;
        confined.lower = lower;
        overlay(&confined.lower, &upper, &work, &merged)?;
        confined.merged = merged;
        Ok(confined)
    }

    /// The overlay, as verify sees it (to remove files before the server starts).
    pub(crate) fn merged(&self) -> &Path {
        &self.merged
    }

    /// Verify's own files, shown read-only to the sandbox at `ETC`.
    pub(crate) fn etc(&self) -> &Path {
        &self.etc
    }

    /// A server's log `name`, in verify's own folder (the server writes it through the
    /// descriptor verify opens).
    pub(crate) fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `program`, to be started in the sandbox as `identity()`.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.sandbox.command(program)
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        // Detached: a server that did not stop in time must not keep the image mounted.
        for path in [&self.merged, &self.lower] {
            if !path.as_os_str().is_empty() {
                let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Makes verify the reaper of its descendants' orphans: a program that a database forks and
/// abandons (a daemon started from its catalog) becomes verify's child, not init's, so that
/// `kill_leftovers` finds it. Whoever runs verify's databases calls it before the first.
pub(crate) fn adopt_orphans() {
    // SAFETY: sets a flag of this process; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Kills and reaps every child of verify's that runs as `identity()`: what a sandbox left behind
/// (its servers are stopped by then). Each is opened as a pidfd and checked again before the
/// signal, so a pid reused meanwhile is never signalled.
pub(crate) fn kill_leftovers() {
    let ours = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if !is_left_over(pid, ours) {
            continue;
        }
        let Some(process) = PidFd::open(pid) else {
            continue;
        };
        if is_left_over(pid, ours) {
            process.kill();
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

/// A process held by a pidfd: a signal sent through it reaches that process, never one that
/// took its pid since.
#[derive(Debug)]
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// Process `pid`; none if it is gone or the kernel has no pidfd.
    pub(crate) fn open(pid: libc::pid_t) -> Option<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags; the descriptor it returns is checked and
        // owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// SIGKILL; a process already gone makes it fail harmlessly.
    pub(crate) fn kill(&self) {
        // SAFETY: signals the process the pidfd refers to; no memory is passed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Whether process `pid` is a child of `parent` running as `identity()`.
fn is_left_over(pid: i32, parent: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
    };
    field("PPid:") == Some(parent) && field("Uid:") == Some(identity())
}

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;

/// `mount_setattr(2)` on `path` relative to `dirfd`.
fn mount_setattr(dirfd: i32, path: &std::ffi::CStr, flags: u32, attr: &MountAttr) -> std::io::Result<()> {
    // SAFETY: the kernel reads `attr` (its size passed) and `path` (NUL-terminated) during the
    // call only; no memory is written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Mounts the folder `source` at `target`, read-only, `nosuid,nodev,noexec`, with the image's
/// owner `(uid, gid)` shown as `identity()` (and every other owner as nobody), and the folder's
/// own group `top_gid`, when another, as `aside()` (see `mapping_namespace`).
fn idmapped_mount(
    source: &OwnedFd,
    (uid, gid, top_gid): (u32, u32, u32),
    target: &Path,
) -> Result<(), SandboxError> {
    let userns = mapping_namespace(uid, gid, top_gid)?;
    let empty = c"";
    // SAFETY: open_tree reads the NUL-terminated empty path; the descriptor it returns is
    // checked and owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            source.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
        )
    };
    if tree < 0 {
        return Err(SandboxError::Clone(std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor open_tree just returned, owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP
            | MOUNT_ATTR_RDONLY
            | MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(tree.as_raw_fd(), empty, libc::AT_EMPTY_PATH as u32, &attr).map_err(|source| {
        SandboxError::Idmap {
            id: identity(),
            source,
        }
    })?;
    let target_c = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: move_mount reads the two NUL-terminated paths during the call only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(SandboxError::Move {
            target: target.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A user namespace whose only mappings are the image's owner `(uid, gid)` to `identity()` and
/// the folder's group `top_gid`, when another, to `aside()` (the overlay copies nothing up whose
/// ids are not mapped, and MariaDB's data directory is root's group), held by its descriptor: a
/// process is started in a new one, its maps written from here, its namespace opened, and the
/// process killed.
fn mapping_namespace(uid: u32, gid: u32, top_gid: u32) -> Result<OwnedFd, SandboxError> {
    let mut holder = Command::new("sleep");
    holder
        .arg("infinity")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec the closure calls only unshare and prctl, async-signal-safe
    // system calls, on no shared state.
    unsafe {
        holder.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                || libc::unshare(libc::CLONE_NEWUSER) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = holder.spawn().map_err(SandboxError::UserNamespace)?;
    let proc = PathBuf::from(format!("/proc/{}", child.id()));
    let id = identity();
    let mapped = std::fs::write(proc.join("uid_map"), format!("{uid} {id} 1\n"))
        .and_then(|()| {
            let mut map = format!("{gid} {id} 1\n");
            if top_gid != gid {
                map.push_str(&format!("{top_gid} {} 1\n", aside()));
            }
            std::fs::write(proc.join("gid_map"), map)
        })
        .and_then(|()| std::fs::File::open(proc.join("ns/user")));
    let _ = child.kill();
    let _ = child.wait();
    mapped
        .map(OwnedFd::from)
        .map_err(|source| SandboxError::Map { uid, id, source })
}

/// The copy-on-write overlay on `lower` (the idmapped mount), writes in `upper`, at `merged`:
/// `nosuid,nodev,noexec`, and neither redirects nor metadata-only copies (whose extended
/// attributes an untrusted lower layer could forge).
fn overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path) -> Result<(), SandboxError> {
    use nix::mount::MsFlags;
    let options = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=nofollow,metacopy=off,index=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(SandboxError::Overlay)
}

/// What a sandboxed program's start needs, prepared before the fork (the child only makes
/// system calls on it).
#[derive(Debug, Clone)]
struct Sandbox {
    /// A database's folders, shown at `DATA`, `RUN` and `ETC`; none for a filesystem tool.
    binds: Option<Binds>,
    /// The one block device a filesystem tool reads, shown read-only at `IMAGE`.
    device: Option<libc::dev_t>,
    /// A tmpfs is mounted here to build the sandbox's `/tmp`, then moved.
    stage: CString,
    /// Whom it runs as: `identity()`, read before the fork.
    id: u32,
}

#[derive(Debug, Clone)]
struct Binds {
    merged: CString,
    run: CString,
    etc: CString,
    passwd: CString,
    group: CString,
}

/// Where a filesystem tool finds the image it reads.
pub(crate) const IMAGE: &str = "/dev/image";

impl Sandbox {
    fn new(merged: &Path, run: &Path, etc: &Path) -> Result<Sandbox, SandboxError> {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes());
        let stage = etc.parent().unwrap_or(etc).join("stage");
        std::fs::create_dir_all(&stage).map_err(own("create", &stage))?;
        Ok(Sandbox {
            binds: Some(Binds {
                merged: c(merged)?,
                run: c(run)?,
                etc: c(etc)?,
                passwd: c(&etc.join("passwd"))?,
                group: c(&etc.join("group"))?,
            }),
            device: None,
            stage: c(&stage)?,
            id: identity(),
        })
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        // Nothing of root's environment (its HOME, its clients' settings) reaches the sandbox.
        command
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C.UTF-8")
            .current_dir("/");
        let sandbox = self.clone();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure makes only system calls (unshare, mount,
        // mkdir, mknod, open, close, setresuid, prctl, …), async-signal-safe, on strings
        // prepared before the fork; it allocates nothing.
        unsafe {
            command.pre_exec(move || sandbox.enter(parent).map_err(std::io::Error::from_raw_os_error));
        }
        command
    }

    /// In the child, before exec: builds the sandbox and becomes `identity()`. An error is the
    /// errno of the step that failed.
    fn enter(&self, parent: libc::pid_t) -> Result<(), i32> {
        // SAFETY: unshare and mount take no memory of ours but NUL-terminated strings alive
        // for the call, in a child that has one thread.
        unsafe {
            check(libc::unshare(
                libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            ))?;
        }
        mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
        self.build_tmp()?;
        self.build_dev()?;
        if let Some(binds) = &self.binds {
            mount(Some(&binds.passwd), c"/etc/passwd", None, libc::MS_BIND, None)?;
            mount(Some(&binds.group), c"/etc/group", None, libc::MS_BIND, None)?;
        }
        mount(Some(c"dev"), c"/dev", None, libc::MS_MOVE, None)?;
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::chdir(c"/".as_ptr()) })?;
        mount(Some(&self.stage), c"/tmp", None, libc::MS_MOVE, None)?;
        self.lock_down()?;
        become_identity(self.id, parent)
    }

    /// The new /tmp, built aside (the working directory) while the paths it binds are
    /// reachable: the database's folders, and `dev`, moved to /dev after.
    fn build_tmp(&self) -> Result<(), i32> {
        let secure = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(
            Some(c"tmpfs"),
            &self.stage,
            Some(c"tmpfs"),
            secure,
            Some(c"mode=1777,size=64m"),
        )?;
        // SAFETY: NUL-terminated paths alive for each call.
        unsafe {
            check(libc::chdir(self.stage.as_ptr()))?;
            for dir in [c"data", c"run", c"etc", c"dev"] {
                check(libc::mkdir(dir.as_ptr(), 0o755))?;
            }
        }
        if let Some(binds) = &self.binds {
            mount(Some(&binds.merged), c"data", None, libc::MS_BIND, None)?;
            mount(Some(&binds.run), c"run", None, libc::MS_BIND, None)?;
            mount(Some(&binds.etc), c"etc", None, libc::MS_BIND, None)?;
        }
        Ok(())
    }

    /// `dev`: null, zero, full, random and urandom bound from /dev, a private /dev/shm, and
    /// for a tool its image, a read-only node of root's.
    fn build_dev(&self) -> Result<(), i32> {
        let dev_flags = libc::MS_NOSUID | libc::MS_NOEXEC;
        mount(
            Some(c"tmpfs"),
            c"dev",
            Some(c"tmpfs"),
            dev_flags,
            Some(c"mode=0755,size=1m"),
        )?;
        for (name, source) in DEVICES {
            // SAFETY: a NUL-terminated path; the descriptor is closed at once.
            unsafe {
                let fd = libc::open(
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check(fd)?;
                libc::close(fd);
            }
            mount(Some(source), name, None, libc::MS_BIND, None)?;
        }
        if let Some(device) = self.device {
            // SAFETY: a NUL-terminated path.
            check(unsafe { libc::mknod(c"dev/image".as_ptr(), libc::S_IFBLK | 0o444, device) })?;
        }
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::mkdir(c"dev/shm".as_ptr(), 0o755) })?;
        let secure = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount(
            Some(c"tmpfs"),
            c"dev/shm",
            Some(c"tmpfs"),
            secure,
            Some(c"mode=1777,size=256m"),
        )
    }

    /// Everything read-only, nosuid and nodev; then the few exceptions.
    fn lock_down(&self) -> Result<(), i32> {
        let all = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        setattr(c"/", libc::AT_RECURSIVE as u32, all, 0)?;
        for writable in [c"/tmp", c"/dev/shm"] {
            setattr(writable, 0, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_RDONLY)?;
        }
        if self.binds.is_some() {
            for writable in [c"/tmp/data", c"/tmp/run"] {
                setattr(writable, 0, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_RDONLY)?;
            }
            setattr(c"/tmp/etc", 0, MOUNT_ATTR_NOEXEC, 0)?;
        }
        for (_, device) in DEVICES {
            setattr(device, 0, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NODEV)?;
        }
        if self.device.is_some() {
            // /dev holds nothing else: the bound devices above and the image's node.
            setattr(c"/dev", 0, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NODEV)?;
        }
        Ok(())
    }
}

/// The devices a sandbox has (its path while it is built, and after): none reaches hardware
/// or another process.
const DEVICES: [(&std::ffi::CStr, &std::ffi::CStr); 5] = [
    (c"dev/null", c"/dev/null"),
    (c"dev/zero", c"/dev/zero"),
    (c"dev/full", c"/dev/full"),
    (c"dev/random", c"/dev/random"),
    (c"dev/urandom", c"/dev/urandom"),
];

/// Becomes `identity()` for good, with no capability and no way to gain one, killed with verify
/// (`parent`), and without core dumps.
fn become_identity(id: u32, parent: libc::pid_t) -> Result<(), i32> {
    let id = id as libc::uid_t;
    // SAFETY: system calls on integers and a null list, in a child that has one thread.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(id, id, id))?;
        check(libc::setresuid(id, id, id))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        // After the change of identity, which clears it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        if libc::getppid() != parent {
            return Err(libc::ESRCH);
        }
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(libc::setrlimit(libc::RLIMIT_CORE, &none))
    }
}

/// A sandbox for the filesystem tools that read an image (blkid, partx, dumpe2fs, debugfs,
/// e2fsck, btrfs, xfs_repair): they parse what the image's author wrote, so they run as
/// `identity()` in a sandbox with the image as their only device, `IMAGE`, read-only (a
/// read-only loop device for a file); the loop device is detached on drop.
#[derive(Debug)]
pub(crate) struct ToolBox {
    sandbox: Sandbox,
    loop_device: Option<String>,
}

impl ToolBox {
    /// For `image` (a file or a block device), with `stage` a folder of verify's own.
    pub(crate) fn new(image: &Path, stage: &Path) -> Result<ToolBox, SandboxError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(image).map_err(own("read", image))?;
        let mut toolbox = ToolBox {
            sandbox: Sandbox {
                binds: None,
                device: None,
                stage: CString::new(stage.as_os_str().as_bytes())?,
                id: identity(),
            },
            loop_device: None,
        };
        std::fs::create_dir_all(stage).map_err(own("create", stage))?;
        let device = if meta.file_type().is_block_device() {
            image.to_path_buf()
        } else {
            let out = Command::new("losetup")
                .args(["--find", "--show", "--read-only"])
                .arg(image)
                .output()
                .map_err(SandboxError::NoLosetup)?;
            if !out.status.success() {
                return Err(SandboxError::Attach {
                    image: image.to_path_buf(),
                    said: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
            toolbox.loop_device = Some(device.clone());
            PathBuf::from(device)
        };
        let rdev = std::fs::metadata(&device).map_err(own("read", &device))?.rdev();
        toolbox.sandbox.device = Some(rdev);
        Ok(toolbox)
    }

    /// `program`, to be started in the sandbox as `identity()`, the image at `IMAGE`.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.sandbox.command(program)
    }
}

impl Drop for ToolBox {
    fn drop(&mut self) {
        if let Some(device) = &self.loop_device {
            let _ = Command::new("losetup").args(["--detach", device]).output();
        }
    }
}

/// The errno of a failed call (a negative result).
fn check(rc: i32) -> Result<(), i32> {
    if rc < 0 {
        // SAFETY: reads this thread's errno.
        return Err(unsafe { *libc::__errno_location() });
    }
    Ok(())
}

/// `mount(2)`, no allocation.
fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> Result<(), i32> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    check(unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) })
}

/// Sets `set` and clears `clear` on the mount at `path` (and below with `AT_RECURSIVE`).
fn setattr(path: &std::ffi::CStr, flags: u32, set: u64, clear: u64) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(libc::AT_FDCWD, path, flags, &attr).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_reads_the_image_as_the_identity_and_cannot_write_it() {
        // Loop devices and namespaces need root, which the integration run has.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::write(&image, vec![5u8; 1 << 20]).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tools = ToolBox::new(&image, &dir.path().join("stage")).unwrap();
        let out = tools
            .command("sh")
            .args([
                "-c",
                "id -u; head -c 3 /dev/image | od -An -tu1; echo x > /dev/image && echo wrote; \
                 ls /dev; touch /etc/x /tmp/data/x 2>/dev/null && echo touched; true",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("{}\n", identity())), "{text}");
        assert!(text.contains("5   5   5"), "{text}");
        assert!(!text.contains("wrote") && !text.contains("touched"), "{text}");
        assert!(
            !text.contains("loop") && !text.contains("sda") && !text.contains("vda"),
            "{text}"
        );
        drop(tools);
        assert_eq!(std::fs::read(&image).unwrap(), vec![5u8; 1 << 20]);
    }

    #[test]
    fn the_identity_is_outside_every_range_accounts_are_given_from() {
        // Above the login and system ranges, systemd's dynamic users and nobody (65534), and
        // below the range it gives foreign images (0x7FFE0000), and below 2^31.
        const { assert!(RANGE_START > 0x7000_0000 && RANGE_START + 2 * SLOTS <= 0x7FFE_0000) };
    }
}
