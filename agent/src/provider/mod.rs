//! Snapshot providers: what is asked, inside the frozen window, to capture the disks. Each
//! implements [`crate::transaction::ports::SnapshotProvider`].

pub mod digitalocean;
pub mod local_image;
