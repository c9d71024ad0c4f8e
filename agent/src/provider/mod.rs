//! Snapshot providers: what is asked, inside the frozen window, to capture the disks.

pub mod digitalocean;
pub mod local_image;

use crate::freeze::plan::Target;
use crate::naming::OwnNames;
use crate::transaction::Pruned;

/// A provider's failure, with the cause chain kept for the report.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// The fault is in this machine's set-up (a token file open to others, a missing token):
    /// the user must change something before any retry can succeed.
    setup: bool,
    /// What to do about it, where the provider knows (`doctor` shows it).
    fix: Option<String>,
}

impl ProviderError {
    pub fn new(message: impl Into<String>) -> Self {
        ProviderError {
            message: message.into(),
            source: None,
            setup: false,
            fix: None,
        }
    }

    /// A failure of the machine's set-up, which no retry mends (see [`Self::is_setup`]).
    pub fn setup(message: impl Into<String>) -> Self {
        ProviderError {
            setup: true,
            ..ProviderError::new(message)
        }
    }

    pub fn is_setup(&self) -> bool {
        self.setup
    }

    /// Says what to do about this failure.
    pub fn with_fix(self, fix: impl Into<String>) -> Self {
        ProviderError {
            fix: Some(fix.into()),
            ..self
        }
    }

    pub fn fix(&self) -> Option<&str> {
        self.fix.as_deref()
    }
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ProviderError {
            message: message.into(),
            source: Some(Box::new(source)),
            setup: false,
            fix: None,
        }
    }
}

/// The provider accepted the request: from here the snapshot no longer needs the freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The provider's handle on the request (an action id, an image name).
    pub action_id: String,
    /// Whether the snapshot is already complete.
    pub completed: bool,
    /// Snapshots of attached volumes taken in the same window.
    pub volume_snapshots: Vec<VolumeSnapshotRef>,
}

/// A volume snapshot taken with the machine's snapshot, as one consistent group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeSnapshotRef {
    pub volume_id: String,
    pub volume_name: String,
    pub mountpoint: std::path::PathBuf,
    pub snapshot_id: String,
}

/// A finished snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    pub snapshot_id: Option<String>,
    pub size_bytes: Option<u64>,
}

/// A snapshot the provider holds, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    /// RFC 3339, as the provider gives it.
    pub created_at: String,
    pub size_bytes: Option<u64>,
}

/// Something that takes snapshots.
#[async_trait::async_trait]
pub trait SnapshotProvider: Send {
    /// The name used in configuration and reports.
    fn name(&self) -> &'static str;
    /// Checks, before anything is frozen, everything the request for snapshot `name` will need.
    async fn preflight(&mut self, name: &str, targets: &[Target]) -> Result<(), ProviderError>;
    /// Called right before the freeze (after quiesce and sync): last chance to make sure the
    /// request will not have to set anything up inside the window (a fresh connection).
    async fn ready(&mut self) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Asks for the snapshot. Runs inside the frozen window: no disk writes to targets, and it
    /// may be cancelled (dropped) at the deadline.
    async fn request(&mut self, name: &str, frozen: &[Target]) -> Result<Registration, ProviderError>;
    /// Waits, after the thaw, until the snapshot is complete.
    async fn wait_completed(&mut self, registration: &Registration) -> Result<Completion, ProviderError>;
    /// After a request that did not register (failed, timed out, or cut at the deadline), finds
    /// out, outside the window, whether the provider created a snapshot from it anyway. Never
    /// sends the request again: a retry could make a second snapshot.
    async fn reconcile(&mut self) -> Option<Reconciled> {
        None
    }
    /// This machine's completed snapshots, oldest first. Works outside a transaction.
    async fn list(&mut self) -> Result<Vec<SnapshotInfo>, ProviderError> {
        Err(ProviderError::new(format!(
            "the {} provider cannot list snapshots",
            self.name()
        )))
    }
    /// Deletes all but the newest `keep_last` completed snapshots whose names `ours` accepts.
    /// Works outside a transaction too.
    async fn prune(&mut self, keep_last: usize, ours: &OwnNames) -> Result<Vec<Pruned>, ProviderError> {
        let _ = (keep_last, ours);
        Err(ProviderError::new(format!(
            "the {} provider does not delete old snapshots",
            self.name()
        )))
    }
}

/// What [`SnapshotProvider::reconcile`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The request the provider did register, if it did.
    pub action_id: Option<String>,
    /// What to tell the user.
    pub note: String,
}
