//! DigitalOcean's own limits on volume snapshots, checked in preflight so that a run never
//! freezes for a request the platform will refuse: at most 25 snapshots are kept of a volume,
//! and a volume may be snapshotted once every 10 minutes
//! (docs.digitalocean.com/products/snapshots/details/limits).

use crate::client::{ApiError, Client};
use crate::types::Snapshot;
use std::time::{Duration, SystemTime};

/// The most snapshots DigitalOcean keeps of one volume.
pub(crate) const MOST_PER_VOLUME: usize = 25;
/// How long after a volume's snapshot the next one may be taken.
pub(crate) const VOLUME_INTERVAL: Duration = Duration::from_secs(600);

/// Why a volume cannot be snapshotted now.
#[derive(Debug, thiserror::Error)]
pub enum VolumeLimit {
    #[error(
        "volume {volume} has {count} snapshots, the most DigitalOcean keeps of a volume ({MOST_PER_VOLUME}): \
         delete older ones before the next (the control panel, or `retention.keep_last` of 24 or fewer, \
         which keeps a volume's snapshots below it)"
    )]
    /// It holds the most snapshots the platform keeps.
    Full {
        /// The volume's name.
        volume: String,
        /// Its snapshots.
        count: usize,
    },
    #[error(
        "volume {volume} was snapshotted at {at}, and DigitalOcean takes at most one snapshot of a volume \
         every 10 minutes: the next may be taken in {wait}"
    )]
    /// Its last snapshot is under 10 minutes old.
    TooSoon {
        /// The volume's name.
        volume: String,
        /// When its last snapshot was taken.
        at: String,
        /// How long until the next may be.
        wait: String,
    },
    /// Its snapshots could not be listed.
    #[error("cannot list the snapshots of volume {volume}: {source}")]
    Api {
        /// The volume's name.
        volume: String,
        /// The API's error.
        #[source]
        source: Box<ApiError>,
    },
}

/// Checks that volume `name` (`id`) may be snapshotted now.
pub async fn check_volume(client: &Client, id: &str, name: &str) -> Result<(), VolumeLimit> {
    let snapshots = client
        .volume_snapshots(id)
        .await
        .map_err(|source| VolumeLimit::Api {
            volume: name.to_string(),
            source: Box::new(source),
        })?;
    judge(name, &snapshots, SystemTime::now())
}

/// The limits applied to a volume's snapshots at `now`.
fn judge(name: &str, snapshots: &[Snapshot], now: SystemTime) -> Result<(), VolumeLimit> {
    if snapshots.len() >= MOST_PER_VOLUME {
        return Err(VolumeLimit::Full {
            volume: name.to_string(),
            count: snapshots.len(),
        });
    }
    let newest = snapshots
        .iter()
        .filter_map(|s| Some((humantime::parse_rfc3339(&s.created_at).ok()?, &s.created_at)))
        .max_by_key(|(t, _)| *t);
    if let Some((taken, at)) = newest {
        let since = now.duration_since(taken).unwrap_or_default();
        if since < VOLUME_INTERVAL {
            let wait = Duration::from_secs((VOLUME_INTERVAL - since).as_secs().max(1));
            return Err(VolumeLimit::TooSoon {
                volume: name.to_string(),
                at: at.clone(),
                wait: humantime::format_duration(wait).to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(at: &str) -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "id": "8fa70202-0000-4000-8000-000000000001", "name": "s", "created_at": at,
            "regions": ["nyc3"], "min_disk_size": 10, "size_gigabytes": 1.0,
            "resource_id": "506f78a4", "resource_type": "volume"
        }))
        .unwrap()
    }

    #[test]
    fn a_volume_full_or_snapshotted_in_the_last_ten_minutes_is_refused() {
        let now = humantime::parse_rfc3339("2026-12-04T12:00:00Z").unwrap();
        assert!(judge("data", &[taken("2026-12-04T11:49:59Z")], now).is_ok());
        let soon = judge(
            "data",
            &[taken("2026-12-04T11:49:00Z"), taken("2026-12-04T11:55:00Z")],
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(
            soon.contains("at 2026-12-04T11:55:00Z") && soon.contains("in 5m"),
            "{soon}"
        );
        let full: Vec<Snapshot> = (0..25).map(|_| taken("2026-11-01T00:00:00Z")).collect();
        let full = judge("data", &full, now).unwrap_err().to_string();
        assert!(full.contains("has 25 snapshots"), "{full}");
    }
}
