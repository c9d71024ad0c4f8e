//! The record of the power-ons offline runs owe: one file per Droplet under the user's state
//! directory, written before the shutdown and removed once the Droplet runs again.

use super::*;

/// The pending power-ons this user's runs recorded: one file per Droplet under
/// `$XDG_STATE_HOME/freezeframe/offline` (default `~/.local/state/freezeframe/offline`).
#[derive(Debug, Clone)]
pub struct Pending {
    dir: PathBuf,
}

/// One recorded pending power-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPowerOn {
    pub droplet_id: u64,
    pub droplet_name: String,
    /// When the run was about to shut the Droplet down (RFC 3339).
    pub since: String,
}

impl Pending {
    pub fn new() -> Result<Pending, Failure> {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .ok_or_else(|| {
                Failure::new(
                    Exit::Usage,
                    "--offline records a pending power-on under the user's state directory: set HOME or XDG_STATE_HOME",
                )
            })?;
        Ok(Pending::in_dir(base.join("freezeframe/offline")))
    }

    /// The records in `dir`.
    pub(super) fn in_dir(dir: PathBuf) -> Pending {
        Pending { dir }
    }

    fn file(&self, droplet: u64) -> PathBuf {
        self.dir.join(format!("{droplet}.json"))
    }

    pub(super) fn record(&self, entry: &PendingPowerOn) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).unwrap_or_default();
        freezeframe_agent::atomic_file::replace(&self.file(entry.droplet_id), &json, 0o644)
    }

    pub(super) fn clear(&self, droplet: u64) {
        let _ = std::fs::remove_file(self.file(droplet));
    }

    /// Every recorded pending power-on.
    pub fn all(&self) -> Vec<PendingPowerOn> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }
}
