//! Snapshot providers: what is asked, inside the frozen window, to capture the disks. Each
//! implements [`crate::transaction::ports::SnapshotProvider`]. The DigitalOcean API client itself
//! is the `freezeframe_digitalocean` crate; `digitalocean` adapts it.

pub(crate) mod digitalocean;
pub mod local_image;
