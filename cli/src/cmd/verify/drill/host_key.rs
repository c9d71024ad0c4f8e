//! The restored Droplet's SSH host key, made for one drill, given in its user data and
//! pinned.

use super::Stop;
use crate::agent::{Exit, Failure};

/// The restored copy must never snapshot itself: its timer and its agent (which serves
/// snapshots over D-Bus) are masked at first boot, before either can start.
pub(super) const USER_DATA: &str = "#cloud-config\n\
bootcmd:\n  - [systemctl, mask, --now, freezeframe-snapshot.timer, freezeframe-agent.service]\n";

/// The restored Droplet's SSH host key, made for this drill: cloud-init installs it (the
/// image's own keys are deleted, no others made) and it is the only key ssh accepts from the
/// address, so a host that answers there with another key is never given the drill's login or
/// trusted with its verdict. The private half lives in memory only, never prints, and goes
/// with the drill; the directory (mode 700, the pinned known-hosts file) is removed on drop.
pub(super) struct HostKey {
    dir: tempfile::TempDir,
    /// `ssh-ed25519 AAAA…`, without a comment.
    public: String,
    private: Private,
}

/// Text that holds a private key: its `Debug` prints `[redacted]`.
pub(super) struct Private(pub(super) String);

impl std::fmt::Debug for Private {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("public", &self.public)
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

impl HostKey {
    /// A new ed25519 key pair from `ssh-keygen`, in a private directory of its own; the
    /// private key's file is removed once read.
    pub(super) fn generate() -> Result<HostKey, Failure> {
        let failed =
            |why: String| Failure::new(Exit::Failed, format!("cannot make the Droplet's host key: {why}"));
        let dir = tempfile::Builder::new()
            .prefix("freezeframe-verify-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| failed(e.to_string()))?;
        let file = dir.path().join("host_key");
        let mut keygen = std::process::Command::new("ssh-keygen");
        for name in freezeframe_agent::secret::SECRET_VARIABLES {
            keygen.env_remove(name);
        }
        let out = keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "freezeframe-verify", "-f"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot run ssh-keygen ({e}): install openssh-client")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "ssh-keygen failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let private = std::fs::read_to_string(&file).map_err(|e| failed(e.to_string()));
        let _ = std::fs::remove_file(&file);
        let private = Private(private?);
        let public =
            std::fs::read_to_string(file.with_extension("pub")).map_err(|e| failed(e.to_string()))?;
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        if public.len() != 2 || public[0] != "ssh-ed25519" {
            return Err(failed("ssh-keygen wrote no ed25519 public key".into()));
        }
        Ok(HostKey {
            dir,
            public: public.join(" "),
            private,
        })
    }

    /// The Droplet's user data: [`USER_DATA`], and this key as its only host key.
    pub(super) fn user_data(&self) -> Private {
        let mut text = format!(
            "{USER_DATA}ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n"
        );
        for line in self.private.0.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push_str(&format!("  ed25519_public: {}\n", self.public));
        Private(text)
    }

    /// The known-hosts file that pins this key, under the name `alias` (written once).
    pub(super) fn known_hosts(&self, alias: &str) -> Result<std::path::PathBuf, Stop> {
        let file = self.dir.path().join("known_hosts");
        if !file.exists() {
            std::fs::write(&file, format!("{alias} {}\n", self.public))
                .map_err(|e| Stop::Failed(format!("cannot write {}: {e}", file.display())))?;
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_host_key_goes_to_the_user_data_and_the_pin_and_never_prints() {
        let key = HostKey::generate().unwrap();
        let dir = key.dir.path().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!dir.join("host_key").exists(), "the private key's file is left");
        let user_data = key.user_data().0;
        assert!(user_data.starts_with(USER_DATA), "{user_data}");
        let block: Vec<&str> = user_data
            .lines()
            .skip_while(|l| *l != "  ed25519_private: |")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| &l[4..])
            .collect();
        assert_eq!(block.join("\n"), key.private.0.trim_end());
        assert_eq!(block[0], "-----BEGIN OPENSSH PRIVATE KEY-----");
        assert!(user_data.ends_with(&format!("  ed25519_public: {}\n", key.public)));
        assert!(user_data.contains("\nssh_genkeytypes: []\n"), "{user_data}");
        let Ok(pin) = key.known_hosts("freezeframe-verify-7") else {
            panic!("cannot write the known-hosts file")
        };
        assert_eq!(
            std::fs::read_to_string(pin).unwrap(),
            format!("freezeframe-verify-7 {}\n", key.public)
        );
        let printed = format!("{key:?}");
        assert!(
            printed.contains("[redacted]") && !printed.contains(block[1]),
            "{printed}"
        );
        drop(key);
        assert!(!dir.exists(), "the key's directory is left");
    }
}
