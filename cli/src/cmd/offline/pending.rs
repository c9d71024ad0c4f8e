//! The record of the power-ons offline runs owe: one file per Droplet under the user's state
//! directory, written before the shutdown and removed once the Droplet runs again.

use super::*;

/// The pending power-ons this user's runs recorded: one file per Droplet under
/// `$XDG_STATE_HOME/freezeframe/offline` (default `~/.local/state/freezeframe/offline`).
#[derive(Debug, Clone)]
pub struct Pending {
    dir: PathBuf,
}

/// One recorded pending power-on. Records written before the run's snapshot name, API and
/// account were kept still read: those fields are then absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPowerOn {
    pub droplet_id: u64,
    pub droplet_name: String,
    /// When the run was about to shut the Droplet down (RFC 3339).
    pub since: String,
    /// The snapshot the run was taking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// The API the run called: a record is powered on through that API only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The uuid of the account whose token the run had (`GET /v2/account`; never the token):
    /// a record is powered on with a token of that account only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl PendingPowerOn {
    /// Why this record is not for the API at `api_url` and the account `account` (None: not
    /// known), if it is not. A record that did not keep one of them is not judged by it.
    pub(crate) fn foreign(&self, api_url: &str, account: Option<&str>) -> Option<String> {
        if let Some(recorded) = self.api_url.as_deref().filter(|r| *r != api_url) {
            return Some(format!(
                "it was recorded by a run against the API at {recorded}, not {api_url}"
            ));
        }
        match (self.account.as_deref(), account) {
            (Some(recorded), Some(here)) if recorded != here => Some(format!(
                "it was recorded by a run with a token of another account ({recorded}; this \
                 token's is {here})"
            )),
            _ => None,
        }
    }
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

    /// Where the record of Droplet `droplet` is (or would be) kept.
    pub(crate) fn file(&self, droplet: u64) -> PathBuf {
        self.dir.join(format!("{droplet}.json"))
    }

    /// Where the record of Droplet `droplet` lives and how to drop it, for messages; empty when
    /// there is none (the tag alone says it is pending).
    pub(crate) fn where_recorded(&self, droplet: u64) -> String {
        let file = self.file(droplet);
        if !file.exists() {
            return String::new();
        }
        format!(
            "; its record is {0}: `rm {0}` drops it (and only it: the Droplet stays as it is, \
             and a tag {PENDING_TAG} on it is listed by `recover` until removed)",
            file.display()
        )
    }

    /// The record of Droplet `droplet`, if one is kept and reads.
    pub(crate) fn get(&self, droplet: u64) -> Option<PendingPowerOn> {
        serde_json::from_slice(&std::fs::read(self.file(droplet)).ok()?).ok()
    }

    pub(super) fn record(&self, entry: &PendingPowerOn) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(entry).unwrap_or_default();
        freezeframe_agent::replace_file(&self.file(entry.droplet_id), &json, 0o644)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> PendingPowerOn {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_record_is_foreign_only_by_what_it_kept() {
        let old = record(r#"{"droplet_id": 7, "droplet_name": "db", "since": "2026-12-01T00:00:00Z"}"#);
        assert_eq!(old.foreign("https://api.digitalocean.com", Some("a")), None);
        let kept = record(
            r#"{"droplet_id": 7, "droplet_name": "db", "since": "2026-12-01T00:00:00Z",
                "api_url": "https://api.digitalocean.com", "account": "a"}"#,
        );
        assert_eq!(kept.foreign("https://api.digitalocean.com", Some("a")), None);
        assert_eq!(kept.foreign("https://api.digitalocean.com", None), None);
        assert!(kept
            .foreign("https://api.digitalocean.com", Some("b"))
            .is_some_and(|why| why.contains("another account")));
        assert!(kept
            .foreign("http://127.0.0.1:4010", Some("a"))
            .is_some_and(|why| why.contains("against the API at https://api.digitalocean.com")));
    }
}
