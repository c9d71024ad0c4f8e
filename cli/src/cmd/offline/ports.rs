//! The DigitalOcean API calls an offline run and `recover` make, as a port: [`Api`], which the
//! API client implements and the tests' double stands in for, so the run's paths (what it
//! does when a call fails) are tested without a server.

use freezeframe_digitalocean::limits::{self, VolumeLimit};
use freezeframe_digitalocean::{ApiError, Client};
use freezeframe_digitalocean::{Droplet, ListedDroplet, PowerAction, Volume};
use std::time::Duration;

/// An action on a Droplet, as far as a run looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// `power_on`, `snapshot`, …
    pub kind: String,
    /// `in-progress`, `completed` or `errored`.
    pub status: String,
}

/// A Droplet snapshot, as far as a run looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub id: String,
    pub name: String,
}

/// The calls, as [`Client`] names them, each answering what the run reads of it.
pub(crate) trait Api {
    /// The API's address, as records of pending power-ons keep it.
    fn api_url(&self) -> String;
    /// The uuid of the account the token belongs to.
    async fn account(&self) -> Result<String, ApiError>;
    async fn droplet(&self, id: u64) -> Result<Droplet, ApiError>;
    async fn droplet_actions(&self, id: u64) -> Result<Vec<Event>, ApiError>;
    async fn volume(&self, id: &str) -> Result<Volume, ApiError>;
    /// Whether the platform would take a snapshot of the volume now.
    async fn check_volume(&self, id: &str, name: &str) -> Result<(), VolumeLimit>;
    async fn tag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError>;
    async fn untag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError>;
    async fn droplet_power(&self, id: u64, action: PowerAction) -> Result<(), ApiError>;
    /// The snapshot action's id.
    async fn snapshot_droplet(&self, id: u64, name: &str, timeout: Duration) -> Result<u64, ApiError>;
    /// The volume snapshot's id.
    async fn snapshot_volume(&self, id: &str, name: &str, timeout: Duration) -> Result<String, ApiError>;
    /// The action's status.
    async fn action(&self, id: u64) -> Result<String, ApiError>;
    async fn droplet_snapshots(&self, id: u64) -> Result<Vec<Image>, ApiError>;
    async fn tag_snapshots(&self, tag: &str, images: &[String], volumes: &[String]) -> Result<(), ApiError>;
    async fn droplets(&self) -> Result<Vec<ListedDroplet>, ApiError>;
    async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError>;
}

impl Api for Client {
    fn api_url(&self) -> String {
        Client::api_url(self).to_string()
    }
    async fn account(&self) -> Result<String, ApiError> {
        Ok(Client::account(self).await?.uuid)
    }
    async fn droplet(&self, id: u64) -> Result<Droplet, ApiError> {
        Client::droplet(self, id).await
    }
    async fn droplet_actions(&self, id: u64) -> Result<Vec<Event>, ApiError> {
        let actions = Client::droplet_actions(self, id).await?;
        Ok(actions
            .into_iter()
            .map(|a| Event {
                kind: a.kind,
                status: a.status,
            })
            .collect())
    }
    async fn volume(&self, id: &str) -> Result<Volume, ApiError> {
        Client::volume(self, id).await
    }
    async fn check_volume(&self, id: &str, name: &str) -> Result<(), VolumeLimit> {
        limits::check_volume(self, id, name).await
    }
    async fn tag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError> {
        Client::tag_droplet(self, tag, id).await
    }
    async fn untag_droplet(&self, tag: &str, id: u64) -> Result<(), ApiError> {
        Client::untag_droplet(self, tag, id).await
    }
    async fn droplet_power(&self, id: u64, action: PowerAction) -> Result<(), ApiError> {
        Client::droplet_power(self, id, action).await.map(|_| ())
    }
    async fn snapshot_droplet(&self, id: u64, name: &str, timeout: Duration) -> Result<u64, ApiError> {
        Ok(Client::snapshot_droplet(self, id, name, timeout).await?.id)
    }
    async fn snapshot_volume(&self, id: &str, name: &str, timeout: Duration) -> Result<String, ApiError> {
        Ok(Client::snapshot_volume(self, id, name, timeout).await?.id)
    }
    async fn action(&self, id: u64) -> Result<String, ApiError> {
        Ok(Client::action(self, id).await?.status)
    }
    async fn droplet_snapshots(&self, id: u64) -> Result<Vec<Image>, ApiError> {
        let snapshots = Client::droplet_snapshots(self, id).await?;
        Ok(snapshots
            .into_iter()
            .map(|s| Image {
                id: s.id.to_string(),
                name: s.name,
            })
            .collect())
    }
    async fn tag_snapshots(&self, tag: &str, images: &[String], volumes: &[String]) -> Result<(), ApiError> {
        Client::tag_snapshots(self, tag, images, volumes).await
    }
    async fn droplets(&self) -> Result<Vec<ListedDroplet>, ApiError> {
        Client::droplets(self).await
    }
    async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError> {
        Client::droplets_with_tag(self, tag).await
    }
}
