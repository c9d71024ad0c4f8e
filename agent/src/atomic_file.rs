//! The one way the agent (and the CLI) writes a state file: atomically, and so that no one who
//! may write the folder can redirect it. Root writes into folders others own (node_exporter's
//! textfile folder belongs to `prometheus`) or may write (a 1777 disk): a name they could
//! guess is a name they could plant a link at. So the folder is opened once, without following
//! a link anyone but root (or this user) could have placed ([`open_dir`]), and everything else
//! happens relative to that descriptor: a new file under a random name (`O_CREAT | O_EXCL |
//! O_NOFOLLOW`, its mode set on our own descriptor), flushed, renamed over the target (a link
//! there is replaced, never followed), and the folder flushed, so a crash leaves the old file or
//! the new one.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

/// How many links a path may pass through (the kernel's own bound).
const MAX_LINKS: usize = 40;

/// Replaces `path` with `bytes`, mode exactly `mode` (whatever the umask), atomically; its
/// folder (and any missing above it, mode 0755) is made if needed. See the module's comment.
pub(crate) fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, name) = split(path)?;
    let dir = open_dir(dir, Some(0o755))?;
    replace_in(dir.as_fd(), name, bytes, mode)
}

/// As [`replace`], for `name` in the folder open as `dir`.
pub(crate) fn replace_in(dir: BorrowedFd<'_>, name: &OsStr, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (file, partial) = create_partial(dir, name, mode)?;
    let written = (|| {
        let mut file = std::fs::File::from(file);
        // On our own descriptor: the umask (a unit's UMask=0077) must not hide the metrics.
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        nix::fcntl::renameat(dir, partial.as_os_str(), dir, name)?;
        nix::unistd::fsync(dir).map_err(std::io::Error::from)
    })();
    if written.is_err() {
        let _ = nix::unistd::unlinkat(dir, partial.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// A new file beside `name` under a name no one can guess, created by us (never an existing
/// file or link), and that name.
fn create_partial(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> std::io::Result<(OwnedFd, OsString)> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut tries = 0;
    loop {
        let mut partial = OsString::from(".");
        partial.push(name);
        partial.push(format!(".{:016x}.partial", random()?));
        match nix::fcntl::openat(dir, partial.as_os_str(), flags, Mode::from_bits_truncate(mode)) {
            Ok(fd) => return Ok((fd, partial)),
            Err(Errno::EEXIST) if tries < 8 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// 64 random bits from the kernel.
fn random() -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given, which
    // lives on this stack frame for the whole call.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// `path`'s folder and file name.
fn split(path: &Path) -> std::io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// Opens the folder `path`, one component at a time, never following a link that someone
/// other than root or this user could have placed: a link is followed only from a folder that
/// they alone may write (or, in a sticky folder such as /tmp, a link they own). With `create`,
/// missing folders are made with that mode (less the umask).
pub(crate) fn open_dir(path: &Path, create: Option<u32>) -> std::io::Result<OwnedFd> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let open_root = |p: &str| nix::fcntl::open(p, dir_flags, Mode::empty()).map_err(std::io::Error::from);
    let mut fd = open_root(if path.is_absolute() { "/" } else { "." })?;
    let mut todo: VecDeque<OsString> = components(path);
    let mut links = 0;
    let mut made = false;
    while let Some(part) = todo.pop_front() {
        if part == "/" {
            fd = open_root("/")?;
            continue;
        }
        match nix::fcntl::openat(&fd, part.as_os_str(), dir_flags, Mode::empty()) {
            Ok(next) => (fd, made) = (next, false),
            Err(Errno::ENOENT) if create.is_some() && !made => {
                let mode = Mode::from_bits_truncate(create.unwrap_or(0o755));
                match nix::sys::stat::mkdirat(&fd, part.as_os_str(), mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(refusal(path, &part, &format!("cannot be made: {e}"))),
                }
                made = true;
                todo.push_front(part);
            }
            // A link opened with O_NOFOLLOW: ELOOP, or ENOTDIR as O_DIRECTORY sees the link.
            Err(Errno::ELOOP | Errno::ENOTDIR) if is_link(&fd, &part)? => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(refusal(path, &part, "leads through too many links"));
                }
                if !may_follow(&fd, &part)? {
                    return Err(refusal(
                        path,
                        &part,
                        "is a link in a folder that others may write, so it could lead anywhere: \
                         refused; name the folder it leads to instead",
                    ));
                }
                let target = nix::fcntl::readlinkat(&fd, part.as_os_str())?;
                for c in components(Path::new(&target)).into_iter().rev() {
                    todo.push_front(c);
                }
            }
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(refusal(path, &part, "is not a folder")),
            Err(e) => return Err(refusal(path, &part, &e.to_string())),
        }
    }
    Ok(fd)
}

/// `path`'s components as names to open: "/" for the root, `..` kept, `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some(OsString::from("/")),
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(n) => Some(n.to_os_string()),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether `name` in the folder `dir` is a symbolic link.
pub(crate) fn is_link(dir: &OwnedFd, name: &OsStr) -> std::io::Result<bool> {
    let stat = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(stat.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// Whether the link `name` in the folder `dir` can only have been placed by root or by us.
fn may_follow(dir: &OwnedFd, name: &OsStr) -> std::io::Result<bool> {
    let folder = nix::sys::stat::fstat(dir.as_fd())?;
    let link = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let ours = |uid: u32| uid == 0 || uid == nix::unistd::geteuid().as_raw();
    let only_owner_writes = folder.st_mode & 0o022 == 0;
    let sticky = folder.st_mode & libc::S_ISVTX != 0;
    Ok(ours(folder.st_uid) && only_owner_writes || sticky && ours(link.st_uid))
}

fn refusal(path: &Path, part: &OsStr, why: &str) -> std::io::Error {
    std::io::Error::other(format!("{}: {} {why}", path.display(), Path::new(part).display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_no_partial_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/deeper/record.json");
        replace(&file, b"one", 0o600).unwrap();
        replace(&file, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert_eq!(mode(&file), 0o644);
        assert_eq!(std::fs::read_dir(file.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_link_at_the_target_name_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, b"untouched").unwrap();
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = dir.path().join("metrics.prom");
        symlink(&canary, &file).unwrap();
        replace(&file, b"metrics", 0o644).unwrap();
        assert!(
            std::fs::symlink_metadata(&file).unwrap().is_file(),
            "a file now, not a link"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"metrics");
        assert_eq!(std::fs::read(&canary).unwrap(), b"untouched");
        assert_eq!(mode(&canary), 0o600);
    }

    #[test]
    fn a_linked_folder_others_may_write_is_refused_and_a_private_one_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        // A shared folder (such as /tmp or a 1777 disk), holding a link to a folder.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        symlink(&elsewhere, shared.join("textfile")).unwrap();
        let err = replace(&shared.join("textfile/metrics.prom"), b"x", 0o644).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a link in a folder that others may write"),
            "{err}"
        );
        assert!(open_dir(&shared.join("textfile"), None).is_err());
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written there"
        );
        // A link only this user could have placed is an ordinary path (/var/run → /run).
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&elsewhere, private.join("textfile")).unwrap();
        replace(&private.join("textfile/metrics.prom"), b"x", 0o644).unwrap();
        assert_eq!(std::fs::read(elsewhere.join("metrics.prom")).unwrap(), b"x");
    }

    #[test]
    fn a_file_where_a_folder_should_be_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), b"").unwrap();
        let err = replace(&dir.path().join("plain/x"), b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("plain is not a folder"), "{err}");
    }
}
