//! The API's JSON, for exactly the fields freezeframe uses (DigitalOcean OpenAPI v2 schemas
//! `droplet`, `action`, `droplet_snapshot`, `error`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DropletEnvelope {
    pub droplet: Droplet,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    /// Set while an event (an action) holds the Droplet.
    pub locked: bool,
    pub status: String,
    #[serde(default)]
    pub volume_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActionEnvelope {
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActionList {
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Action {
    pub id: u64,
    /// `in-progress`, `completed` or `errored`.
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub started_at: Option<String>,
}

impl Action {
    pub(crate) fn in_progress(&self) -> bool {
        self.status == "in-progress"
    }
    pub(crate) fn completed(&self) -> bool {
        self.status == "completed"
    }
    pub(crate) fn errored(&self) -> bool {
        self.status == "errored"
    }
}

/// `POST /v2/droplets/{id}/actions` body for a snapshot (`droplet_action_snapshot`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SnapshotRequest<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SnapshotList {
    pub snapshots: Vec<DropletSnapshot>,
    #[serde(default)]
    pub links: Option<Links>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub pages: Option<Pages>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Pages {
    #[serde(default)]
    pub next: Option<String>,
}

/// `GET /v2/droplets`: one page of the account's Droplets.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DropletList {
    pub droplets: Vec<ListedDroplet>,
    #[serde(default)]
    pub links: Option<Links>,
}

/// A Droplet as a list shows it: enough to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListedDroplet {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub networks: Networks,
}

impl ListedDroplet {
    /// Its public IPv4 address, if it has one.
    pub fn public_ipv4(&self) -> Option<&str> {
        self.networks
            .v4
            .iter()
            .find(|n| n.kind == "public")
            .map(|n| n.ip_address.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Networks {
    #[serde(default)]
    pub v4: Vec<NetworkV4>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetworkV4 {
    pub ip_address: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DropletSnapshot {
    pub id: u64,
    pub name: String,
    pub created_at: String,
    pub size_gigabytes: f64,
}

/// The metadata service's `/metadata/v1.json`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub droplet_id: u64,
}

/// DigitalOcean's error body.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeEnvelope {
    pub volume: Volume,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
}

/// `POST /v2/volumes/{id}/snapshots` body.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VolumeSnapshotRequest<'a> {
    pub name: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeSnapshotEnvelope {
    pub snapshot: VolumeSnapshot,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VolumeSnapshot {
    pub id: String,
    pub name: String,
}
