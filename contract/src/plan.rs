//! What a snapshot would freeze and quiesce: `Plan`'s answer and `plan --json`.

use crate::{Skipped, Target};
use serde::{Deserialize, Serialize};

/// Everything `plan` shows: the freeze order, skips, quiescers and detected databases. Its
/// JSON form is `plan --json`; on D-Bus it is the same keys as `a{sv}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    /// The provider, as in `snapshot.provider`.
    pub provider: String,
    /// `freeze.max_freeze` (in milliseconds on the wire).
    #[serde(rename = "max_freeze_ms", with = "crate::millis")]
    pub max_freeze: std::time::Duration,
    /// The quiescers, in prepare order, as lines.
    pub quiesce: Vec<String>,
    /// What database detection found.
    pub databases: DatabaseDetection,
    /// Applications found running that nothing quiesces, each with why.
    #[serde(default)]
    pub not_quiesced: Vec<String>,
    #[serde(default)]
    /// What would be frozen, in freeze order.
    pub freeze_order: Vec<Target>,
    #[serde(default)]
    /// What would not be frozen, and why.
    pub skipped: Vec<Skipped>,
}

/// What database detection found. `enabled` is false with `quiesce.auto = false`; otherwise
/// one of `systemd` (there is none to ask: why), `error` (listing failed) or `units` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseDetection {
    /// `quiesce.auto`.
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// There is no systemd to ask: why.
    pub systemd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Listing the units failed: why.
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The database units found running.
    pub units: Option<Vec<DetectedUnit>>,
}

/// A database unit found running, and what quiesces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectedUnit {
    /// The unit, such as `postgresql@15-main.service`.
    pub unit: String,
    /// `postgresql`, `mariadb`, `redis` or `mongodb`.
    pub kind: String,
    /// Its main process.
    pub main_pid: u32,
    /// What quiesces it: its native quiescer, a configured one, or nothing.
    pub handled_by: String,
    /// Why nothing quiesces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A dry run's answer (`snapshot --dry-run`, from the agent's command and over the bus): the
/// plan, and what preflight (everything checked before a freeze) found. Its JSON form is the
/// plan's keys and `preflight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    /// What a snapshot would freeze and quiesce.
    #[serde(flatten)]
    pub plan: SnapshotPlan,
    /// Whether a snapshot now would get past preflight.
    pub preflight: Preflight,
}

/// Preflight's verdict in a dry run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preflight {
    /// A snapshot now would get past preflight.
    pub passed: bool,
    /// What would not stop it but matters.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Why it would stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit code a snapshot now would end with (and the dry run ends with).
    pub exit: u8,
}
