//! The other side of a trust boundary: an unprivileged user (uid 65534) acting on what it may
//! write, and a canary of root's (bytes and mode) in a folder that user cannot reach, checked
//! unchanged after the agent ran.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The attacker's uid (and gid): nobody.
pub const NOBODY: u32 = 65534;

/// `program args…` as [`NOBODY`], with no supplementary groups.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        "--".into(),
    ])
    .arg(program);
    cmd
}

/// Runs `sh -c script` as [`NOBODY`], or fails the test with its output.
pub fn nobody_sh(script: &str) {
    let out = as_nobody("sh")
        .args(["-c", script])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "as uid {NOBODY}: {script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder of `NOBODY`'s own (mode `mode`) at `path`.
pub fn nobody_dir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    nix::unistd::chown(path, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A file of root's, in a folder of root's that others cannot enter (mode 0700).
pub struct Canary {
    /// The file.
    pub path: PathBuf,
    folder: PathBuf,
}

const CANARY_BYTES: &[u8] = b"root's own bytes; nobody may change them\n";
const CANARY_MODE: u32 = 0o640;

impl Canary {
    /// Places the canary in `parent/vault/canary`.
    pub fn new(parent: &Path) -> Canary {
        let folder = parent.join("vault");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = folder.join("canary");
        std::fs::write(&path, CANARY_BYTES).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(CANARY_MODE)).unwrap();
        Canary { path, folder }
    }

    /// The folder the canary is in.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Fails the test unless the canary is still there, a file with its bytes and mode, alone
    /// in its folder; `what` says what ran.
    pub fn assert_untouched(&self, what: &str) {
        let meta = std::fs::symlink_metadata(&self.path)
            .unwrap_or_else(|e| panic!("{what}: the canary {} is gone: {e}", self.path.display()));
        assert!(meta.is_file(), "{what}: the canary is no longer a file");
        let bytes = std::fs::read(&self.path).unwrap();
        assert!(
            bytes == CANARY_BYTES,
            "{what}: the canary's bytes changed to {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            CANARY_MODE,
            "{what}: the canary's mode changed"
        );
        let beside: Vec<_> = std::fs::read_dir(&self.folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            beside,
            ["canary"],
            "{what}: something was written beside the canary"
        );
    }
}
