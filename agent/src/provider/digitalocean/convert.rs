//! The API client's values as the transaction's port values, and back: the client crate knows
//! nothing of the transaction, and the transaction nothing of DigitalOcean.

use crate::transaction::ports::{
    ApiBudget, ApiUsage, ClaimLimit, Consistency, DrillResult, DrillSeen, RecordedConsistency,
};
use freezeframe_digitalocean::labels::Level;
use freezeframe_digitalocean::{platform, Usage};

/// The level a tag records, as reports and `list` show it.
pub(super) fn recorded(level: Level) -> RecordedConsistency {
    match level {
        Level::Offline => RecordedConsistency::Offline,
        Level::Application => RecordedConsistency::Application,
        Level::Filesystem => RecordedConsistency::Filesystem,
        Level::Crash => RecordedConsistency::Crash,
    }
}

/// The tag's level for what a run reached.
pub(super) fn level(recorded: RecordedConsistency) -> Level {
    match recorded {
        RecordedConsistency::Offline => Level::Offline,
        RecordedConsistency::Application => Level::Application,
        RecordedConsistency::Filesystem => Level::Filesystem,
        RecordedConsistency::Crash => Level::Crash,
    }
}

/// A drill's result, as `list` shows it.
pub(super) fn drill_result(result: platform::DrillResult) -> DrillResult {
    match result {
        platform::DrillResult::Verified => DrillResult::Verified,
        platform::DrillResult::Failed => DrillResult::Failed,
    }
}

/// The newest drill its tags record, as the metrics report it.
pub(super) fn drill_seen(drilled: platform::Drilled) -> DrillSeen {
    DrillSeen {
        snapshot: drilled.snapshot,
        verified: drilled.result == platform::DrillResult::Verified,
        unix_seconds: drilled.unix_seconds,
    }
}

/// What the token's rate limits said, as the run's report counts it.
pub(super) fn usage(usage: Usage) -> ApiUsage {
    ApiUsage {
        calls: usage.calls,
        budget: usage.remaining.map(|remaining| ApiBudget {
            remaining,
            reset_unix: usage.reset.unwrap_or(0),
        }),
    }
}

/// The bound a drill's verdict puts on runs that thaw when the action registers: a disk read
/// after the thaw may hold writes from after the snapshot point.
pub(super) fn claim_limit(learned: &platform::Learned) -> Option<ClaimLimit> {
    learned.after_thaw.then(|| ClaimLimit {
        at_most: Consistency::Crash,
        why: format!(
            "a restore drill of snapshot {} (taken {}) found that this platform read the \
             Droplet's disk after the thaw: with thaw_after = \"registered\" a snapshot here may \
             hold writes from after the snapshot point, so this one is only crash-consistent. Set \
             `digitalocean.thaw_after = \"completed\"` (the freeze then lasts until the snapshot \
             completes, within max_freeze), or drill a newer snapshot if the platform changed",
            learned.snapshot, learned.taken
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag written for a level reads back as that level, in the words reports use for it.
    #[test]
    fn every_level_keeps_its_word_both_ways() {
        for tagged in Level::ALL {
            let level = recorded(tagged);
            assert_eq!(level.as_str(), tagged.as_str());
            assert_eq!(super::level(level), tagged);
        }
        for level in [
            RecordedConsistency::Offline,
            RecordedConsistency::Application,
            RecordedConsistency::Filesystem,
            RecordedConsistency::Crash,
        ] {
            assert_eq!(recorded(super::level(level)), level);
        }
    }

    #[test]
    fn only_an_after_the_thaw_verdict_bounds_a_run() {
        let mut learned = platform::Learned {
            after_thaw: false,
            snapshot: "web-20261204".into(),
            taken: "2026-12-04T12:00:00Z".into(),
        };
        assert_eq!(claim_limit(&learned), None);
        learned.after_thaw = true;
        let limit = claim_limit(&learned).unwrap();
        assert_eq!(limit.at_most, Consistency::Crash);
        assert!(
            limit.why.contains("web-20261204") && limit.why.contains("thaw_after"),
            "{}",
            limit.why
        );
    }
}
