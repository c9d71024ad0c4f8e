//! The series the benchmark's charts are drawn from (docs/src/charts/), as typed records: what
//! each part measured over time or run by run, beyond the medians of its table. Kept in one
//! file beside the charts (`bench.json`); a run of some parts replaces only their records, so
//! the charts of parts run at different times can be redrawn together.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The name of the records' file in the charts' folder.
pub const FILE: &str = "bench.json";

/// Everything the charts show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// When and under what load each part ran.
    pub conditions: Vec<Conditions>,
    /// PostgreSQL's transactions per second around one snapshot, one line per strategy.
    pub tps: Vec<TpsLine>,
    /// Every snapshot's frozen window, per tool and dirty size.
    pub windows: Vec<WindowSamples>,
    /// A fleet's API calls under the real rate limit.
    pub fleet_rate: Option<FleetRate>,
    /// Every group snapshot: its members' windows and its slowest request.
    pub groups: Vec<GroupRun>,
}

/// One part's run: the date (UTC) and the machine's load average when it started and ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub part: String,
    pub date: String,
    pub load_before: f64,
    pub load_after: f64,
    pub cpus: usize,
    /// The build the bench ran (`release` through tests/bench/run).
    pub profile: String,
}

/// How the database part took its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    Freezeframe,
    FsfreezeScript,
    StopService,
    Offline,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Freezeframe,
        Strategy::FsfreezeScript,
        Strategy::StopService,
        Strategy::Offline,
    ];

    /// Its name in the tables and the charts' legends.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Freezeframe => "freezeframe",
            Strategy::FsfreezeScript => "fsfreeze script",
            Strategy::StopService => "stop PostgreSQL, snapshot, start",
            Strategy::Offline => "offline: freezeframe snapshot --offline",
        }
    }
}

/// Transactions completed per bin, as TPS, around one snapshot (the strategy's run with the
/// median longest gap), time 0 being the moment the snapshot was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TpsLine {
    pub strategy: Strategy,
    /// The first bin's start, ms from the snapshot's start (negative: before it).
    pub start_ms: f64,
    pub bin_ms: f64,
    pub tps: Vec<f64>,
    /// How long that snapshot took, start to end, ms.
    pub snapshot_ms: f64,
}

/// The tools of the window part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tool {
    Freezeframe,
    FsfreezeScript,
}

impl Tool {
    pub const ALL: [Tool; 2] = [Tool::Freezeframe, Tool::FsfreezeScript];

    pub fn label(self) -> &'static str {
        match self {
            Tool::Freezeframe => "freezeframe",
            Tool::FsfreezeScript => "fsfreeze script",
        }
    }
}

/// One tool's frozen windows at one dirty size, ms, one per snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSamples {
    pub tool: Tool,
    pub dirty_mib: u64,
    pub frozen_ms: Vec<f64>,
}

/// The fleet run's API calls: how many the token made in the minute before each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetRate {
    pub droplets: usize,
    pub limit_per_minute: usize,
    pub step_s: f64,
    /// Calls admitted in the 60 s up to `(i + 1) * step_s` from the run's start.
    pub calls_last_minute: Vec<usize>,
}

/// One group snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRun {
    pub members: usize,
    pub rcu_knob_held: bool,
    /// Each member's frozen window, ms.
    pub windows_ms: Vec<f64>,
    /// The slowest member's API round trip, ms.
    pub slowest_request_ms: f64,
}

impl Recorded {
    /// The records in `dir`, or none yet.
    pub fn load(dir: &Path) -> Result<Recorded, String> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: {e}; remove it or redraw from a good copy", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recorded::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut text = serde_json::to_string_pretty(self).expect("records serialise");
        text.push('\n');
        std::fs::write(dir.join(FILE), text).map_err(|e| format!("{}: {e}", dir.display()))
    }

    /// These records with `part`'s taken from `new` (a part run again replaces its own).
    pub fn replace_part(&mut self, part: &str, new: Recorded) {
        match part {
            "database" => self.tps = new.tps,
            "window" => self.windows = new.windows,
            "limits" => self.fleet_rate = new.fleet_rate,
            "group" => self.groups = new.groups,
            _ => return,
        }
        self.conditions.retain(|c| c.part != part);
        self.conditions
            .extend(new.conditions.into_iter().filter(|c| c.part == part));
        self.conditions.sort_by(|a, b| a.part.cmp(&b.part));
    }
}

/// The one-minute load average now.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Now, UTC, to the minute.
pub fn date_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
