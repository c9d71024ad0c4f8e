//! Snapshot providers: what is asked, inside the frozen window, to capture the disks. Each
//! implements [`crate::transaction::ports::SnapshotProvider`].

pub mod digitalocean;
test_kit_mod!(local_image);
