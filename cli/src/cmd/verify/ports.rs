//! The DigitalOcean API calls a restore drill makes, as a port: [`Api`], which the API client
//! implements and the tests' double stands in for, so the drill's paths (cleanup on every one)
//! are tested without a server.

use freezeframe_digitalocean::{ApiError, Client};
use freezeframe_digitalocean::{Droplet, DropletCreate, ListedDroplet, Size, Snapshot, Volume, VolumeCreate};

/// The calls, as [`Client`] names them.
pub(crate) trait Api {
    async fn snapshot(&self, id: &str) -> Result<Snapshot, ApiError>;
    async fn snapshots(&self, resource_type: &str) -> Result<Vec<Snapshot>, ApiError>;
    async fn sizes(&self) -> Result<Vec<Size>, ApiError>;
    async fn create_droplet(&self, request: &DropletCreate<'_>) -> Result<Droplet, ApiError>;
    async fn droplet(&self, id: u64) -> Result<Droplet, ApiError>;
    async fn create_volume(&self, request: &VolumeCreate<'_>) -> Result<Volume, ApiError>;
    async fn attach_volume(&self, volume: &str, droplet: u64, region: &str) -> Result<bool, ApiError>;
    async fn tag_snapshot(&self, tag: &str, id: &str, volume: bool) -> Result<(), ApiError>;
    async fn delete_droplets_tagged(&self, tag: &str) -> Result<(), ApiError>;
    async fn volumes(&self) -> Result<Vec<Volume>, ApiError>;
    async fn delete_volume(&self, id: &str) -> Result<(), ApiError>;
    async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError>;
}

impl Api for Client {
    async fn snapshot(&self, id: &str) -> Result<Snapshot, ApiError> {
        Client::snapshot(self, id).await
    }
    async fn snapshots(&self, resource_type: &str) -> Result<Vec<Snapshot>, ApiError> {
        Client::snapshots(self, resource_type).await
    }
    async fn sizes(&self) -> Result<Vec<Size>, ApiError> {
        Client::sizes(self).await
    }
    async fn create_droplet(&self, request: &DropletCreate<'_>) -> Result<Droplet, ApiError> {
        Client::create_droplet(self, request).await
    }
    async fn droplet(&self, id: u64) -> Result<Droplet, ApiError> {
        Client::droplet(self, id).await
    }
    async fn create_volume(&self, request: &VolumeCreate<'_>) -> Result<Volume, ApiError> {
        Client::create_volume(self, request).await
    }
    async fn attach_volume(&self, volume: &str, droplet: u64, region: &str) -> Result<bool, ApiError> {
        Client::attach_volume(self, volume, droplet, region).await
    }
    async fn tag_snapshot(&self, tag: &str, id: &str, volume: bool) -> Result<(), ApiError> {
        Client::tag_snapshot(self, tag, id, volume).await
    }
    async fn delete_droplets_tagged(&self, tag: &str) -> Result<(), ApiError> {
        Client::delete_droplets_tagged(self, tag).await
    }
    async fn volumes(&self) -> Result<Vec<Volume>, ApiError> {
        Client::volumes(self).await
    }
    async fn delete_volume(&self, id: &str) -> Result<(), ApiError> {
        Client::delete_volume(self, id).await
    }
    async fn droplets_with_tag(&self, tag: &str) -> Result<Vec<ListedDroplet>, ApiError> {
        Client::droplets_with_tag(self, tag).await
    }
}
