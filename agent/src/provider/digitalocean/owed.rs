//! The level tags earlier runs owe: a run that did not wait for its snapshot to complete could
//! not tag it (the image has no id until then), so a later run tags it once it is listed. The
//! listing is the one this run made anyway (its wait or its retention) where it made one; each
//! tag is one call for every snapshot owing it.

use super::{convert, DigitalOcean, LABEL_SCOPE};
use freezeframe_contract::history::RunRecord;
use freezeframe_digitalocean::labels;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long an earlier run's snapshot may stay unlisted (in progress) before its tag is given
/// up: it never completed, or it was deleted.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What one tag goes on: Droplet snapshots by image id, volume snapshots, and the runs they
/// are of.
#[derive(Default)]
struct Tagging {
    images: Vec<String>,
    volumes: Vec<String>,
    runs: Vec<String>,
}

impl DigitalOcean {
    /// Tags the snapshots of the earlier runs in `owed` (this Droplet's, with `tag_owed`) with
    /// their level and group, those that are complete; answers the runs (by snapshot name) that
    /// owe nothing more: tagged, or given up after [`GIVE_UP_AFTER`] unlisted. Only with the
    /// client this run's preflight connected; a failure is logged, and the tag stays owed.
    pub(crate) async fn tag_earlier(&mut self, owed: &[RunRecord]) -> Vec<String> {
        let id = self.droplet_id;
        let listed = self.listed.take();
        let Some(client) = self.client.as_mut().filter(|_| id != 0 && !owed.is_empty()) else {
            return Vec::new();
        };
        client.add_scopes(&[LABEL_SCOPE]);
        let listed = match listed {
            Some(listed) => listed,
            None => match client.droplet_snapshots(id).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::info!("cannot list Droplet {id}'s snapshots to tag earlier runs' (next run): {e}");
                    return Vec::new();
                }
            },
        };
        let now = freezeframe_contract::history::unix(std::time::SystemTime::now());
        let mut settled = Vec::new();
        let mut tags: BTreeMap<String, Tagging> = BTreeMap::new();
        for run in owed {
            let Some(level) = run.consistency else {
                settled.push(run.snapshot_name.clone());
                continue;
            };
            let Some(image) = listed.iter().rev().find(|s| s.name == run.snapshot_name) else {
                if now - run.finished_unix > GIVE_UP_AFTER.as_secs_f64() {
                    tracing::info!(
                        snapshot = %run.snapshot_name,
                        "an earlier run's snapshot is not listed a day later: its level tag is given up"
                    );
                    settled.push(run.snapshot_name.clone());
                }
                continue;
            };
            let level = labels::consistency_tag(convert::level(level.into()));
            for tag in std::iter::once(level).chain(run.group.as_deref().map(labels::group_tag)) {
                let tagging = tags.entry(tag).or_default();
                tagging.images.push(image.id.to_string());
                tagging.volumes.extend(run.volume_snapshot_ids.iter().cloned());
                tagging.runs.push(run.snapshot_name.clone());
            }
        }
        let mut failed = BTreeSet::new();
        let mut tagged = BTreeSet::new();
        for (tag, tagging) in tags {
            match client.tag_snapshots(&tag, &tagging.images, &tagging.volumes).await {
                Ok(()) => tagged.extend(tagging.runs),
                Err(e) => {
                    tracing::warn!("cannot tag earlier runs' snapshots {tag} (the next run tries again): {e}");
                    failed.extend(tagging.runs);
                }
            }
        }
        settled.extend(tagged.difference(&failed).cloned());
        settled
    }
}
