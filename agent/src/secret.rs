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

/// Reads a secret from a file that, like an ssh key, no group or other user may read.
/// Surrounding whitespace (a trailing newline) is not part of the secret.
pub fn read_private_file(file: &Path) -> Result<Secret, SecretFileError> {
    match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretFileError::Missing {
            file: file.to_path_buf(),
        }),
        Err(e) => Err(SecretFileError::Unreadable {
            file: file.to_path_buf(),
            problem: e.to_string(),
        }),
        Ok(meta) if meta.mode() & 0o077 != 0 => Err(SecretFileError::TooOpen {
            file: file.to_path_buf(),
            mode: meta.mode() & 0o7777,
        }),
        Ok(_) => read_file(file),
    }
}

/// Reads a secret from a file without checking its mode: for files whose privacy someone else
/// ensures, such as systemd credentials.
pub(crate) fn read_file(file: &Path) -> Result<Secret, SecretFileError> {
    let text = std::fs::read_to_string(file).map_err(|e| SecretFileError::Unreadable {
        file: file.to_path_buf(),
        problem: e.to_string(),
    })?;
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
