//! Snapshot providers: what is asked, inside the frozen window, to capture the disks. Each
//! implements [`crate::transaction::ports::SnapshotProvider`]. The DigitalOcean API client itself
//! is the `freezeframe_digitalocean` crate; `digitalocean` adapts it.

pub(crate) mod digitalocean;
test_kit_mod!(local_image);

use crate::transaction::ports::{DrillSeen, ProviderError, SnapshotProvider};
use freezeframe_contract::history::RunRecord;
use freezeframe_contract::SnapshotInfo;

/// The provider the settings name, as the job and the service hold it: the port the
/// transaction drives, and what only they ask of it, outside any run (the list, the Droplet).
pub(crate) enum Provider {
    /// Images of the block devices in a folder.
    LocalImage(local_image::LocalImage),
    /// DigitalOcean's Droplet snapshots (boxed: its client and settings are large).
    DigitalOcean(Box<digitalocean::DigitalOcean>),
}

impl Provider {
    /// The port, for the transaction (and retention outside a run).
    pub(crate) fn port(&mut self) -> &mut dyn SnapshotProvider {
        match self {
            Provider::LocalImage(p) => p,
            Provider::DigitalOcean(p) => p.as_mut(),
        }
    }

    /// This machine's completed snapshots, oldest first.
    pub(crate) async fn list(&mut self) -> Result<Vec<SnapshotInfo>, ProviderError> {
        match self {
            Provider::LocalImage(p) => p.list().await,
            Provider::DigitalOcean(p) => p.list().await,
        }
    }

    /// The Droplet its snapshots are of, once preflight learned it (DigitalOcean's).
    pub(crate) fn droplet_id(&self) -> Option<u64> {
        match self {
            Provider::LocalImage(_) => None,
            Provider::DigitalOcean(p) => p.droplet_id(),
        }
    }

    /// The newest restore drill of this machine's snapshots that the provider keeps a record
    /// of, wherever the drill ran (DigitalOcean: the drill's tags on the snapshot). Asked after
    /// the thaw, for the metrics; none when there is none (local images keep none), or it
    /// cannot be read.
    pub(crate) async fn last_drill(&mut self) -> Option<DrillSeen> {
        match self {
            Provider::LocalImage(_) => None,
            Provider::DigitalOcean(p) => p.last_drill().await,
        }
    }

    /// Puts on the snapshots of the earlier runs in `owed` the level (and group) tags they
    /// could not put on themselves (they did not wait for completion); answers the runs, by
    /// snapshot name, that owe nothing more. Local images carry no tags.
    pub(crate) async fn tag_earlier(&mut self, owed: &[RunRecord]) -> Vec<String> {
        match self {
            Provider::LocalImage(_) => Vec::new(),
            Provider::DigitalOcean(p) => p.tag_earlier(owed).await,
        }
    }
}
