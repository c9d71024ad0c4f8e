//! What restore drills learned about when this platform reads a Droplet's disk. Each drill
//! (`freezeframe verify`) tags the snapshot it restored with its result and the probe's
//! verdict; the newest verdict among this Droplet's own snapshots stands (a platform can
//! change). What a verdict means for a run (under `thaw_after = "registered"`, an
//! after-the-thaw verdict caps its claim at crash-consistent) is the agent's to say.

use crate::client::{ApiError, Client};
use std::collections::{HashMap, HashSet};

/// The tag a drill puts on a snapshot that restored and passed every check.
pub const VERIFIED_TAG: &str = "freezeframe-verified";
/// The tag a drill puts on a snapshot that failed its drill.
pub const FAILED_TAG: &str = "freezeframe-verify-failed";
/// The start of the tag a drill puts on the snapshot it restored, saying when it ran
/// (`freezeframe-drilled:<seconds since the Unix epoch>`): tags carry no time of their own.
pub const DRILLED_TAG_PREFIX: &str = "freezeframe-drilled:";
/// The tag a drill puts on a snapshot whose disk was read inside the frozen window.
pub const INSIDE_WINDOW_TAG: &str = "freezeframe-probe-inside-window";
/// The tag a drill puts on a snapshot whose disk was read after the thaw.
pub const AFTER_THAW_TAG: &str = "freezeframe-probe-after-thaw";

/// The newest drill verdict on one of this Droplet's snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The disk was read after the thaw.
    pub after_thaw: bool,
    /// The snapshot drilled (its name).
    pub snapshot: String,
    /// When it was taken (RFC 3339).
    pub taken: String,
}

/// What a restore drill found for a snapshot, as its tags record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillResult {
    /// It restored, and every check passed ([`VERIFIED_TAG`]).
    Verified,
    /// It did not restore, or a check failed ([`FAILED_TAG`]).
    Failed,
}

/// The newest verdict drills left on `droplet`'s snapshots, if a drill ever found this
/// account's disks read after the thaw (only that verdict bounds a run). Every run asks, so the
/// usual answer costs one call: no snapshot carries that tag. Only when one does are the
/// Droplet's own snapshots and the later, opposite verdicts read too.
pub async fn learned(client: &Client, droplet: u64) -> Result<Option<Learned>, ApiError> {
    let after_thaw = client.images_tagged(AFTER_THAW_TAG).await?;
    if after_thaw.is_empty() {
        return Ok(None);
    }
    let own: HashSet<u64> = client
        .droplet_snapshots(droplet)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let inside_window = client.images_tagged(INSIDE_WINDOW_TAG).await?;
    let verdicts = after_thaw
        .into_iter()
        .map(|image| (image, true))
        .chain(inside_window.into_iter().map(|image| (image, false)));
    let mut newest: Option<Learned> = None;
    for (image, after_thaw) in verdicts {
        // RFC 3339 times in UTC sort as text.
        if own.contains(&image.id) && newest.as_ref().is_none_or(|n| image.created_at > n.taken) {
            newest = Some(Learned {
                after_thaw,
                snapshot: image.name,
                taken: image.created_at,
            });
        }
    }
    Ok(newest)
}

/// The tag saying a drill ran at `unix_seconds`.
pub fn drilled_tag(unix_seconds: u64) -> String {
    format!("{DRILLED_TAG_PREFIX}{unix_seconds}")
}

/// When the newest drill recorded in `tags` ran, if one recorded its time.
pub fn drilled_at(tags: &[String]) -> Option<u64> {
    tags.iter()
        .filter_map(|t| t.strip_prefix(DRILLED_TAG_PREFIX)?.parse().ok())
        .max()
}

/// The newest drill of one of this Droplet's snapshots whose time its tags record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drilled {
    /// The snapshot drilled (its name).
    pub snapshot: String,
    /// What the drills of it found.
    pub result: DrillResult,
    /// When the newest drill of it ran, in seconds since the Unix epoch.
    pub unix_seconds: u64,
}

/// The newest drill, wherever it ran, of `droplet`'s snapshots, from the drills' tags: the two
/// calls `drill_results` makes and, only when some snapshot carries a verdict, the Droplet's
/// own list of snapshots. A snapshot drilled by a version that left no time is not counted.
pub async fn newest_drill(client: &Client, droplet: u64) -> Result<Option<Drilled>, ApiError> {
    let results = drill_results(client).await?;
    if results.is_empty() {
        return Ok(None);
    }
    let newest = client
        .droplet_snapshots(droplet)
        .await?
        .into_iter()
        .filter_map(|s| {
            let (result, unix_seconds) = *results.get(&s.id)?;
            Some(Drilled {
                snapshot: s.name,
                result,
                unix_seconds: unix_seconds?,
            })
        })
        .max_by_key(|d| d.unix_seconds);
    Ok(newest)
}

/// Each drilled snapshot's result, by image id. A snapshot drilled twice with different results
/// counts as failed: one restore that failed is a fact that a later success does not undo.
/// With each, when its newest drill ran, if its tags say.
pub async fn drill_results(client: &Client) -> Result<HashMap<u64, (DrillResult, Option<u64>)>, ApiError> {
    let mut results = HashMap::new();
    for (tag, result) in [
        (VERIFIED_TAG, DrillResult::Verified),
        (FAILED_TAG, DrillResult::Failed),
    ] {
        for image in client.images_tagged(tag).await? {
            let at = drilled_at(image.tags.as_deref().unwrap_or_default());
            results.insert(image.id, (result, at));
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_time_survives_its_tag_and_the_newest_is_read() {
        let tags = [
            drilled_tag(1_765_000_000),
            VERIFIED_TAG.to_string(),
            drilled_tag(1_765_100_000),
            format!("{DRILLED_TAG_PREFIX}soon"),
        ];
        assert_eq!(drilled_at(&tags), Some(1_765_100_000));
        assert_eq!(drilled_at(&[VERIFIED_TAG.to_string()]), None);
    }
}
