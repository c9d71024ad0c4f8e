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

/// Reads a secret from a file that, like an ssh key, no group or other user may read, and that
/// root (or this process's own user) owns: a file another user owns is theirs to rewrite.
/// The checks are made on the file opened, the one then read, so a file swapped in between
/// cannot pass them. Surrounding whitespace (a trailing newline) is not part of the secret.
pub fn read_private_file(file: &Path) -> Result<Secret, SecretFileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let unreadable = |problem: String| SecretFileError::Unreadable {
        file: file.to_path_buf(),
        problem,
    };
    // Non-blocking: a FIFO put in its place must not hang the open.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file);
    let mut opened = match opened {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SecretFileError::Missing {
                file: file.to_path_buf(),
            })
        }
        Err(e) => return Err(unreadable(e.to_string())),
        Ok(opened) => opened,
    };
    let meta = opened.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("it is not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            file: file.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    let expected = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != expected {
        return Err(SecretFileError::NotOwned {
            file: file.to_path_buf(),
            uid: meta.uid(),
            expected,
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut opened, &mut text).map_err(|e| unreadable(e.to_string()))?;
    secret_of(file, &text)
}

/// Reads a secret from a file without checking its mode: for files whose privacy someone else
/// ensures, such as systemd credentials.
pub(crate) fn read_file(file: &Path) -> Result<Secret, SecretFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| SecretFileError::Unreadable {
        file: file.to_path_buf(),
        problem: e.to_string(),
    })?;
    secret_of(file, &text)
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
}
