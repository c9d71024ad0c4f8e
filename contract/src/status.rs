//! What `Status`, `Check` and `Thaw` answer: the agent's state, each preflight check with its
//! fix, and what recovery from a dead agent did.

use crate::report::Report;

/// What `Status` answers (as `a{sv}`, these keys).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentStatus {
    /// The agent's version.
    pub version: String,
    /// `snapshot.provider`.
    pub provider: String,
    /// The configured Droplet; absent when the metadata service tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub droplet_id: Option<u64>,
    /// A run's filesystems are frozen now.
    pub frozen: bool,
    /// The running job's id; 0 when none runs.
    pub running_job: u64,
    /// The last run's report; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<Report>,
    /// The record of the last runs (`history.file`); absent from agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::history::History>,
}

/// One check's outcome, as `doctor` shows it (the service's `Check` answers a list of them).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// What was checked, such as `provider digitalocean`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it failed.
    pub fix: String,
}

/// One recorded filesystem, and what recovery did to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::zvariant::Type)]
pub struct RecoveredFilesystem {
    /// The mountpoint as recorded.
    pub mountpoint: String,
    /// `thawed`, `was-not-frozen`, `mount-changed` (left alone) or `failed`.
    pub outcome: String,
    /// Why, for `failed`; empty otherwise.
    pub error: String,
}

/// One owed resume (a unit to thaw or start, a hook to `thaw`), and how it went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::zvariant::Type)]
pub struct RecoveredResume {
    /// What was owed, in words.
    pub resume: String,
    /// Whether it went well.
    pub ok: bool,
    /// Why it failed; empty when it went well.
    pub error: String,
}

/// What recovery found a dead agent had left, and what it did about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recovered {
    /// The filesystems the frozen record listed (none when there was no record).
    pub filesystems: Vec<RecoveredFilesystem>,
    /// The resumes it owed, in the order they ran (last prepared first).
    pub resumes: Vec<RecoveredResume>,
}

impl Recovered {
    /// Whether there was nothing to thaw or resume.
    pub fn is_empty(&self) -> bool {
        self.filesystems.is_empty() && self.resumes.is_empty()
    }

    /// Whether anything could not be thawed or resumed.
    pub fn failed(&self) -> bool {
        self.filesystems.iter().any(|f| f.outcome == "failed") || self.resumes.iter().any(|r| !r.ok)
    }

    /// One line per filesystem and resume, or one saying there was nothing to do.
    pub fn text(&self, where_: &str) -> String {
        if self.is_empty() {
            return format!("nothing to thaw: nothing frozen or owed in {where_}\n");
        }
        let mut out = String::new();
        for f in &self.filesystems {
            let outcome = match f.outcome.as_str() {
                "mount-changed" => "a different filesystem is mounted there now; left alone".to_string(),
                "failed" => format!("thaw FAILED: {}", f.error),
                other => other.replace('-', " "),
            };
            out.push_str(&format!("{}: {outcome}\n", f.mountpoint));
        }
        for r in &self.resumes {
            if r.ok {
                out.push_str(&format!("{}: done\n", r.resume));
            } else {
                out.push_str(&format!("{}: FAILED: {}\n", r.resume, r.error));
            }
        }
        out
    }
}
