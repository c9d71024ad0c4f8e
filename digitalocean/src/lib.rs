//! freezeframe's client of the DigitalOcean API v2: the calls the agent's provider, the CLI's
//! fleet, offline and drill commands, and the tests make ([`Client`]), the JSON they exchange,
//! the platform's limits on volume snapshots ([`limits`]), and the tags runs and drills leave
//! on snapshots ([`labels`], [`platform`]). It knows nothing of the snapshot transaction: the
//! agent's `provider::digitalocean` adapts it to the transaction's port.

#![warn(missing_docs, unreachable_pub)]

mod client;
pub mod labels;
pub mod limits;
pub mod platform;
mod restore;
mod token;
mod types;

pub use client::{droplet_id_from_metadata, error_chain, http_client, ApiError, Client, Usage};
pub use token::Token;
pub use types::{
    Action, Droplet, DropletCreate, DropletSnapshot, ListedDroplet, NetworkV4, Networks, PowerAction, Size,
    Snapshot, Volume, VolumeCreate, VolumeSnapshot,
};
