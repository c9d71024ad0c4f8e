//! Paths inside an image, resolved inside it. An image is hostile data: its `var` may be a link
//! to `/var`, its `PG_VERSION` a link to a file of the verifier's. Every path verify reads in a
//! view goes through `Root`, which resolves it with `openat2(RESOLVE_IN_ROOT)`: an absolute
//! link, or `..`, stops at the view's top, as it would on the machine the image came from, and
//! never reaches the verifier's own files. What is read is bounded, and only regular files are
//! read (a FIFO would block, a device node is refused by the `nodev` mount anyway).

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The top of an image's view, held open.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
}

/// `struct open_how` of `<linux/openat2.h>`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a path inside the image is, after resolving it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Other,
}

impl Root {
    /// Opens `mountpoint`, a folder of verify's own (its scratch), as the image's top.
    pub(crate) fn open(mountpoint: &Path) -> std::io::Result<Root> {
        let path = CString::new(mountpoint.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; the returned descriptor is checked and owned below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Root { fd })
    }

    /// `rel` opened inside the image with `flags`, every link in it resolved inside the image.
    pub(crate) fn resolve(&self, rel: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let path = CString::new(rel.as_os_str().as_bytes())?;
        // openat2 refuses O_PATH with any flag but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC.
        let extra = if flags & libc::O_PATH != 0 {
            libc::O_CLOEXEC
        } else {
            libc::O_CLOEXEC | libc::O_NOCTTY
        };
        let how = OpenHow {
            flags: (flags | extra) as u64,
            mode: 0,
            resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
        };
        // SAFETY: openat2 reads `path` (NUL-terminated) and `how` (its size passed), both live
        // for the call; the descriptor it returns is checked and owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor openat2 just returned, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// What `rel` is inside the image, if it is there.
    pub(crate) fn kind(&self, rel: &Path) -> Option<Kind> {
        let file = File::from(self.resolve(rel, libc::O_PATH).ok()?);
        let kind = file.metadata().ok()?.file_type();
        Some(if kind.is_file() {
            Kind::File
        } else if kind.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        })
    }

    /// At most `limit` bytes of the regular file `rel` (more is an error: no file verify reads
    /// is that long).
    pub(crate) fn read(&self, rel: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        let file = File::from(self.resolve(rel, libc::O_RDONLY | libc::O_NONBLOCK)?);
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(std::io::Error::other(format!("longer than {limit} bytes")));
        }
        Ok(bytes)
    }

    /// The text of the regular file `rel`, at most `limit` bytes.
    pub(crate) fn read_to_string(&self, rel: &Path, limit: u64) -> std::io::Result<String> {
        String::from_utf8(self.read(rel, limit)?).map_err(|_| std::io::Error::other("not UTF-8 text"))
    }

    /// The entries of the folder `rel` and what each is, links not followed (a link is `Other`).
    pub(crate) fn entries(&self, rel: &Path) -> Vec<(OsString, Kind)> {
        let Ok(fd) = self.resolve(rel, libc::O_RDONLY | libc::O_DIRECTORY) else {
            return Vec::new();
        };
        // The folder just resolved, through its descriptor: each entry's type comes from the
        // folder itself (or an lstat relative to it), never through a link.
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
            return Vec::new();
        };
        let mut found: Vec<(OsString, Kind)> = entries
            .flatten()
            .map(|entry| {
                let kind = match entry.file_type() {
                    Ok(t) if t.is_file() => Kind::File,
                    Ok(t) if t.is_dir() => Kind::Dir,
                    _ => Kind::Other,
                };
                (entry.file_name(), kind)
            })
            .collect();
        drop(fd);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The owner (uid, gid) and mode of `rel`, resolved inside the image.
    pub(crate) fn owner(&self, rel: &Path) -> std::io::Result<(u32, u32, u32)> {
        let meta = File::from(self.resolve(rel, libc::O_PATH)?).metadata()?;
        if meta.file_type().is_block_device() || meta.file_type().is_char_device() {
            return Err(std::io::Error::other("a device node"));
        }
        Ok((meta.uid(), meta.gid(), meta.mode()))
    }
}
