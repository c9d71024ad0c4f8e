//! The API's JSON, for exactly the fields freezeframe uses (DigitalOcean OpenAPI v2 schemas
//! `droplet`, `action`, `droplet_snapshot`, `error`).

use serde::{Deserialize, Serialize};

/// `GET /v2/account`, as far as it is read: which account the token belongs to.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AccountEnvelope {
    pub account: Account,
}

/// The account a token belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    /// The account's unique id.
    pub uuid: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DropletEnvelope {
    pub droplet: Droplet,
}

/// A Droplet, as `GET /v2/droplets/{id}` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Droplet {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Set while an event (an action) holds the Droplet.
    pub locked: bool,
    /// `new`, `active`, `off` or `archive`.
    pub status: String,
    /// The volumes attached to it.
    #[serde(default)]
    pub volume_ids: Vec<String>,
    /// Its addresses.
    #[serde(default)]
    pub networks: Networks,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActionEnvelope {
    pub action: Action,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ActionList {
    pub actions: Vec<Action>,
}

/// An action on a Droplet (a snapshot, a power action), as `GET /v2/actions/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Action {
    /// Its id.
    pub id: u64,
    /// `in-progress`, `completed` or `errored`.
    pub status: String,
    /// What it does: `snapshot`, `shutdown`, `power_on`, ….
    #[serde(rename = "type")]
    pub kind: String,
    /// When it started (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
}

impl Action {
    /// Still running.
    pub fn in_progress(&self) -> bool {
        self.status == "in-progress"
    }
    /// Done.
    pub fn completed(&self) -> bool {
        self.status == "completed"
    }
    /// Failed on DigitalOcean's side.
    pub fn errored(&self) -> bool {
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

/// A power action on a Droplet (`POST /v2/droplets/{id}/actions`, `droplet_action`): a
/// `shutdown` asks the guest to power off (it may not), `power_off` cuts the power, `power_on`
/// boots it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    /// Asks the guest to power off, as its power button would (ACPI).
    Shutdown,
    /// Cuts the power: a hard stop.
    PowerOff,
    /// Boots it.
    PowerOn,
}

/// The body of a power action.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PowerRequest {
    #[serde(rename = "type")]
    pub kind: PowerAction,
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
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its addresses.
    #[serde(default)]
    pub networks: Networks,
}

impl ListedDroplet {
    /// Its public IPv4 address, if it has one.
    pub fn public_ipv4(&self) -> Option<&str> {
        self.networks.public_ipv4()
    }
}

/// A Droplet's addresses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Networks {
    /// Its IPv4 addresses, public and private.
    #[serde(default)]
    pub v4: Vec<NetworkV4>,
}

impl Networks {
    /// The public IPv4 address, if there is one.
    pub fn public_ipv4(&self) -> Option<&str> {
        self.v4
            .iter()
            .find(|n| n.kind == "public")
            .map(|n| n.ip_address.as_str())
    }
}

/// A paginated list: one page's items, and whether another page follows.
pub(crate) trait Paged: serde::de::DeserializeOwned {
    type Item;
    fn into_page(self) -> (Vec<Self::Item>, bool);
}

fn has_next(links: Option<Links>) -> bool {
    links.and_then(|l| l.pages).and_then(|p| p.next).is_some()
}

impl Paged for DropletList {
    type Item = ListedDroplet;
    fn into_page(self) -> (Vec<ListedDroplet>, bool) {
        (self.droplets, has_next(self.links))
    }
}

impl Paged for SnapshotList {
    type Item = DropletSnapshot;
    fn into_page(self) -> (Vec<DropletSnapshot>, bool) {
        (self.snapshots, has_next(self.links))
    }
}

/// One of a Droplet's IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetworkV4 {
    /// The address.
    pub ip_address: String,
    /// `public` or `private`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A snapshot as `GET /v2/droplets/{id}/snapshots` lists it (completed ones only).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DropletSnapshot {
    /// Its image id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// What it holds.
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

/// A block storage volume.
#[derive(Debug, Clone, Deserialize)]
pub struct Volume {
    /// Its id (a UUID).
    pub id: String,
    /// Its name, which names its device on a Droplet (`/dev/disk/by-id/scsi-0DO_Volume_NAME`).
    pub name: String,
    /// Its size.
    #[serde(default)]
    pub size_gigabytes: u64,
    /// Its tags (null in some answers).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// The Droplets it is attached to (null in some answers).
    #[serde(default)]
    pub droplet_ids: Option<Vec<u64>>,
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

/// A volume snapshot, as `POST /v2/volumes/{id}/snapshots` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeSnapshot {
    /// Its id (a UUID).
    pub id: String,
    /// Its name.
    pub name: String,
}

/// A snapshot as `/v2/snapshots` shows it: of a Droplet or of a volume.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Snapshot {
    /// A number for a Droplet snapshot, a UUID for a volume snapshot (a string either way).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// The regions it can be restored in.
    pub regions: Vec<String>,
    /// The smallest disk, in GB, a Droplet made from it needs.
    #[serde(default)]
    pub min_disk_size: u64,
    /// What it holds.
    pub size_gigabytes: f64,
    /// The Droplet's or the volume's id.
    pub resource_id: String,
    /// `droplet` or `volume`.
    pub resource_type: String,
    /// Its tags (null in some answers).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SnapshotEnvelope {
    pub snapshot: Snapshot,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImageList {
    pub snapshots: Vec<Snapshot>,
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for ImageList {
    type Item = Snapshot;
    fn into_page(self) -> (Vec<Snapshot>, bool) {
        (self.snapshots, has_next(self.links))
    }
}

/// A Droplet size on sale, with its price.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Size {
    /// Its name in requests (`s-1vcpu-1gb`).
    pub slug: String,
    /// MiB.
    pub memory: u64,
    /// Virtual CPUs.
    pub vcpus: u64,
    /// GB.
    pub disk: u64,
    /// USD a month.
    pub price_monthly: f64,
    /// USD an hour: what a drill's few minutes cost, counted by the started hour.
    pub price_hourly: f64,
    /// Where it is sold.
    pub regions: Vec<String>,
    /// On sale now.
    pub available: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SizeList {
    pub sizes: Vec<Size>,
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for SizeList {
    type Item = Size;
    fn into_page(self) -> (Vec<Size>, bool) {
        (self.sizes, has_next(self.links))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeList {
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for VolumeList {
    type Item = Volume;
    fn into_page(self) -> (Vec<Volume>, bool) {
        (self.volumes, has_next(self.links))
    }
}

/// `POST /v2/droplets` from a snapshot image (`droplet_single_create`). Its `Debug` leaves out
/// the user data, which may carry a private key (a restore drill's host key).
#[derive(Clone, Serialize)]
pub struct DropletCreate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its region (the snapshot's).
    pub region: &'a str,
    /// A size slug.
    pub size: &'a str,
    /// The snapshot's id.
    pub image: u64,
    /// SSH key ids or fingerprints.
    pub ssh_keys: &'a [String],
    /// Its tags.
    pub tags: &'a [String],
    /// cloud-init user data for its first boot.
    pub user_data: &'a str,
}

impl std::fmt::Debug for DropletCreate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropletCreate")
            .field("name", &self.name)
            .field("region", &self.region)
            .field("size", &self.size)
            .field("image", &self.image)
            .field("ssh_keys", &self.ssh_keys)
            .field("tags", &self.tags)
            .field("user_data", &"[redacted]")
            .finish()
    }
}

/// `POST /v2/volumes` from a volume snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeCreate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its size, at least the snapshot's.
    pub size_gigabytes: u64,
    /// Its region (the snapshot's).
    pub region: &'a str,
    /// The volume snapshot it is made from.
    pub snapshot_id: &'a str,
    /// Its tags.
    pub tags: &'a [String],
}

/// `POST /v2/volumes/{id}/actions` attaching it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VolumeAttach<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub droplet_id: u64,
    pub region: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeActionEnvelope {
    pub action: VolumeAction,
}

/// A volume action: only its status matters here.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeAction {
    pub status: String,
}

/// `POST /v2/tags`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TagCreate<'a> {
    pub name: &'a str,
}

/// `POST /v2/tags/{tag}/resources`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TagResources<'a> {
    pub resources: &'a [TagResource<'a>],
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TagResource<'a> {
    pub resource_id: &'a str,
    /// `image` for a Droplet snapshot, `volume_snapshot` for a volume's, `droplet`.
    pub resource_type: &'static str,
}

/// An image (here: a Droplet snapshot) as `/v2/images` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Image {
    pub id: u64,
    pub name: String,
    pub created_at: String,
    /// Its tags (a drill's verdict and time among them).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImagePage {
    pub images: Vec<Image>,
    #[serde(default)]
    pub links: Option<Links>,
}

impl Paged for ImagePage {
    type Item = Image;
    fn into_page(self) -> (Vec<Image>, bool) {
        (self.images, has_next(self.links))
    }
}
