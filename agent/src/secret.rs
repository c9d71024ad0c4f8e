//! Secrets (the API token, database passwords): a newtype whose `Debug` and `Display` print
//! `[redacted]`, so a secret cannot reach a log line, an error message or a report by accident.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A secret string. Read it only where it is sent, with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value; from here on it never prints.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The environment variables that carry secrets: no program the agent starts (a database
/// client as the database's user, a hook) may inherit them.
pub const SECRET_VARIABLES: &[&str] = &["DIGITALOCEAN_TOKEN"];

/// The secret variables' values, once [`take_from_environment`] has moved them out of it.
static TAKEN: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();

/// Moves the secret variables out of this process's environment into memory, so that no child
/// inherits them.
///
/// # Safety
///
/// Call it while the process has one thread (first thing in `main`): changing the environment
/// races every other thread's `getenv` (which is why `remove_var` is `unsafe` from edition 2024).
pub unsafe fn take_from_environment() {
    let values = SECRET_VARIABLES
        .iter()
        .filter_map(|name| Some((*name, std::env::var(name).ok()?)))
        .collect();
    if TAKEN.set(values).is_ok() {
        for name in SECRET_VARIABLES {
            // One thread only (the caller's promise): nothing reads the environment meanwhile.
            std::env::remove_var(name);
        }
    }
}

/// A secret variable's value: what [`take_from_environment`] took, or (where it was never
/// called, as in a library's tests) the environment's.
pub(crate) fn variable(name: &str) -> Option<String> {
    match TAKEN.get() {
        Some(taken) => taken.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        None => std::env::var(name).ok(),
    }
}

/// Starting a program without the secret variables, whatever the agent's own environment.
pub(crate) trait WithoutSecrets {
    /// Removes every secret variable from the program's environment.
    fn without_secrets(&mut self) -> &mut Self;
}

impl WithoutSecrets for std::process::Command {
    fn without_secrets(&mut self) -> &mut Self {
        SECRET_VARIABLES.iter().fold(self, |c, name| c.env_remove(name))
    }
}

impl WithoutSecrets for tokio::process::Command {
    fn without_secrets(&mut self) -> &mut Self {
        SECRET_VARIABLES.iter().fold(self, |c, name| c.env_remove(name))
    }
}

/// A secret file that cannot be used, and what to do about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretFileError {
    /// It is not there.
    #[error("{file} does not exist")]
    Missing {
        /// The file.
        file: PathBuf,
    },
    /// Someone besides its owner may read it.
    #[error(
        "{file} is readable by group or others (mode {mode:o}); it holds a secret and must be \
         private: run `chmod 600 {file}`"
    )]
    TooOpen {
        /// The file.
        file: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Another user owns it, and so could have written it or may change it.
    #[error(
        "{file} is owned by uid {uid}, not by root{also}: whoever owns it decides the secret; \
         run `chown root:root {file}`",
        also = or_service_user(.expected)
    )]
    NotOwned {
        /// The file.
        file: PathBuf,
        /// Its owner.
        uid: u32,
        /// The uid this process runs as (the service's user), which may own it besides root.
        expected: u32,
    },
    /// A symbolic link: whoever may change where it points chooses the secret.
    #[error(
        "{file} is a symbolic link, which is not followed for a secret: put the file itself \
         there (mode 600, owned by root), e.g. `cp --remove-destination $(readlink -f {file}) \
         {file}`"
    )]
    Link {
        /// The file.
        file: PathBuf,
    },
    /// The folder holding it may be changed by someone besides root (or this process's user),
    /// who could then swap the file.
    #[error(
        "{folder}, which holds {file}, {problem}: whoever may write the folder may replace the \
         secret; move the file to a folder root owns and alone may write, or run `chown root \
         {folder}; chmod go-w {folder}`"
    )]
    UnsafeFolder {
        /// The file.
        file: PathBuf,
        /// Its folder.
        folder: PathBuf,
        /// What is wrong with the folder.
        problem: String,
    },
    /// Larger than any secret: not the file meant.
    #[error("{file} is larger than {MAX_SECRET_BYTES} bytes, too large for a secret: give the file that holds the secret alone")]
    TooLarge {
        /// The file.
        file: PathBuf,
    },
    /// It could not be read.
    #[error("cannot read {file}: {problem}")]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        problem: String,
    },
    /// It holds nothing.
    #[error("{file} is empty")]
    Empty {
        /// The file.
        file: PathBuf,
    },
}

/// `or uid N` when this process is not root (a service's user may own its own secrets).
fn or_service_user(expected: &u32) -> String {
    match expected {
        0 => String::new(),
        uid => format!(" or uid {uid}"),
    }
}

/// The most a secret file may hold: a token, a password or an ssh key is far smaller.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a secret from a file that, like an ssh key, no group or other user may read, and that
/// root (or this process's own user) owns: a file another user owns is theirs to rewrite. Its
/// folder, like ssh's for authorized_keys, must be owned by root (or this user) and writable by
/// no one else, and the file itself must not be a symbolic link. The checks are made on the
/// folder and the file opened, the ones then read, so a file swapped in between cannot pass
/// them. Surrounding whitespace (a trailing newline) is not part of the secret.
pub fn read_private_file(file: &Path) -> Result<Secret, SecretFileError> {
    let expected = nix::unistd::geteuid().as_raw();
    let opened = open_private(file, expected)?;
    let meta = opened.metadata().map_err(|e| unreadable(file, e))?;
    if !meta.is_file() {
        return Err(SecretFileError::Unreadable {
            file: file.to_path_buf(),
            problem: "it is not a regular file".into(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            file: file.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.uid() != 0 && meta.uid() != expected {
        return Err(SecretFileError::NotOwned {
            file: file.to_path_buf(),
            uid: meta.uid(),
            expected,
        });
    }
    read_bounded(file, opened)
}

/// `file` opened for reading inside its folder, once the folder is found safe: never through a
/// symbolic link, never as a controlling terminal, never blocking (a FIFO in its place).
fn open_private(file: &Path, expected: u32) -> Result<std::fs::File, SecretFileError> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let (Some(name), folder) = (file.file_name(), file.parent()) else {
        return Err(SecretFileError::Unreadable {
            file: file.to_path_buf(),
            problem: "it names no file".into(),
        });
    };
    let folder = match folder {
        Some(f) if !f.as_os_str().is_empty() => f,
        _ => Path::new("."),
    };
    let unsafe_folder = |problem: String| SecretFileError::UnsafeFolder {
        file: file.to_path_buf(),
        folder: folder.to_path_buf(),
        problem,
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(folder);
    let dir = match dir {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SecretFileError::Missing {
                file: file.to_path_buf(),
            })
        }
        Err(e) => return Err(unreadable(file, e)),
        Ok(dir) => dir,
    };
    let dir_meta = dir.metadata().map_err(|e| unreadable(file, e))?;
    if dir_meta.uid() != 0 && dir_meta.uid() != expected {
        return Err(unsafe_folder(format!("is owned by uid {}", dir_meta.uid())));
    }
    if dir_meta.mode() & 0o022 != 0 {
        return Err(unsafe_folder(format!(
            "is writable by group or others (mode {:o})",
            dir_meta.mode() & 0o7777
        )));
    }
    // Looked at before it is opened, so that a device node is never opened (the folder is safe:
    // no one else can swap the entry between this look and the open).
    match nix::sys::stat::fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(nix::errno::Errno::ENOENT) => {
            return Err(SecretFileError::Missing {
                file: file.to_path_buf(),
            })
        }
        Err(e) => return Err(unreadable(file, e.into())),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
            return Err(SecretFileError::Link {
                file: file.to_path_buf(),
            })
        }
        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFREG => {
            return Err(SecretFileError::Unreadable {
                file: file.to_path_buf(),
                problem: "it is not a regular file".into(),
            })
        }
        Ok(_) => {}
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(&dir, name, flags, nix::sys::stat::Mode::empty()) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(nix::errno::Errno::ENOENT) => Err(SecretFileError::Missing {
            file: file.to_path_buf(),
        }),
        Err(nix::errno::Errno::ELOOP) => Err(SecretFileError::Link {
            file: file.to_path_buf(),
        }),
        Err(e) => Err(unreadable(file, e.into())),
    }
}

/// Why `file` could not be read.
fn unreadable(file: &Path, e: std::io::Error) -> SecretFileError {
    SecretFileError::Unreadable {
        file: file.to_path_buf(),
        problem: e.to_string(),
    }
}

/// The secret in `opened`, read up to [`MAX_SECRET_BYTES`]: more is not a secret file.
fn read_bounded(file: &Path, opened: std::fs::File) -> Result<Secret, SecretFileError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    opened
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(file, e))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretFileError::TooLarge {
            file: file.to_path_buf(),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretFileError::Unreadable {
        file: file.to_path_buf(),
        problem: "it is not UTF-8 text".into(),
    })?;
    secret_of(file, &text)
}

/// Reads a secret from a file without checking its mode, owner or folder: for files whose
/// privacy someone else ensures, such as systemd credentials (a folder systemd makes, owned by
/// the service's user, mode 500); bounded like any secret all the same.
pub(crate) fn read_file(file: &Path) -> Result<Secret, SecretFileError> {
    let opened = std::fs::File::open(file).map_err(|e| unreadable(file, e))?;
    read_bounded(file, opened)
}

/// The secret in a file's text: the text without surrounding whitespace, which must not be empty.
fn secret_of(file: &Path, text: &str) -> Result<Secret, SecretFileError> {
    match text.trim() {
        "" => Err(SecretFileError::Empty {
            file: file.to_path_buf(),
        }),
        secret => Ok(Secret::new(secret)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("dop_v1_abcdef");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(s.expose(), "dop_v1_abcdef");
    }

    use std::os::unix::fs::PermissionsExt;

    /// A secret file refused (too open, too large, empty after its whitespace) is named in the
    /// error, never its contents: not in the text, the Debug output or the chain.
    #[test]
    fn a_refused_secret_file_never_prints_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "dop_v1_secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = read_private_file(&file).unwrap_err();
        assert!(matches!(open, SecretFileError::TooOpen { .. }), "{open:?}");
        let big = dir.path().join("big");
        std::fs::write(
            &big,
            format!("dop_v1_secret{}", " ".repeat(MAX_SECRET_BYTES as usize)),
        )
        .unwrap();
        let large = read_file(&big).unwrap_err();
        assert!(matches!(large, SecretFileError::TooLarge { .. }), "{large:?}");
        for err in [open, large] {
            for printed in [
                err.to_string(),
                format!("{err:?}"),
                crate::errors::error_chain(&err),
            ] {
                assert!(!printed.contains("dop_v1_secret"), "{printed}");
            }
        }
        // Held in a value that is printed whole, it stays hidden.
        let held = Some(Secret::new("dop_v1_secret"));
        assert!(!format!("{held:?}").contains("dop_v1_secret"));
    }

    /// A private folder (as root makes it) holding `token`, a private root-owned secret file.
    fn private_secret() -> (tempfile::TempDir, PathBuf) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests give files to other users: run the tests as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "dop_v1_secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_file(&file).unwrap().expose(), "dop_v1_secret");
        (dir, file)
    }

    /// As the attacker who may point a link (or the folder it is in) elsewhere: a symbolic link
    /// at the configured path is refused, even to a private root-owned file, with the fix.
    #[test]
    fn a_symbolic_link_to_a_secret_is_refused() {
        let (dir, target) = private_secret();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_private_file(&link).unwrap_err();
        assert_eq!(err, SecretFileError::Link { file: link.clone() });
        let said = err.to_string();
        assert!(
            said.contains(&link.display().to_string()) && said.contains("symbolic link"),
            "{said}"
        );
        assert!(!said.contains("dop_v1_secret"), "{said}");
    }

    /// A device node or a FIFO at the path is refused as no regular file.
    #[test]
    fn a_device_or_fifo_is_no_secret() {
        let (dir, _) = private_secret();
        let device = dir.path().join("device");
        nix::sys::stat::mknod(
            &device,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for file in [device, fifo] {
            let err = read_private_file(&file).unwrap_err();
            assert!(
                matches!(&err, SecretFileError::Unreadable { problem, .. } if problem.contains("not a regular file")),
                "{err:?}"
            );
        }
    }

    /// A file of /dev/zero's kind, or a mistaken path to a large file: read no further than
    /// a secret could be, and say so.
    #[test]
    fn a_file_larger_than_a_secret_is_refused() {
        let (_dir, file) = private_secret();
        std::fs::write(&file, vec![b'a'; MAX_SECRET_BYTES as usize]).unwrap();
        assert_eq!(
            read_private_file(&file).unwrap().expose().len(),
            MAX_SECRET_BYTES as usize
        );
        std::fs::write(&file, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let err = read_private_file(&file).unwrap_err();
        assert_eq!(err, SecretFileError::TooLarge { file: file.clone() });
        assert!(err.to_string().contains(&file.display().to_string()));
    }

    /// As the attacker who may write the folder (and so replace the file between checks, or at
    /// will): a folder writable by group or others, or owned by another user, is refused.
    #[test]
    fn a_folder_another_user_may_write_is_refused() {
        let (dir, file) = private_secret();
        for mode in [0o770, 0o757, 0o1777] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_private_file(&file).unwrap_err();
            assert!(
                matches!(&err, SecretFileError::UnsafeFolder { folder, .. } if folder == dir.path()),
                "mode {mode:o}: {err:?}"
            );
            assert!(err.to_string().contains("chmod go-w"), "{err}");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(read_private_file(&file).is_ok());
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let err = read_private_file(&file).unwrap_err();
        assert!(
            matches!(&err, SecretFileError::UnsafeFolder { problem, .. } if problem.contains("65534")),
            "{err:?}"
        );
        std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
    }
}
