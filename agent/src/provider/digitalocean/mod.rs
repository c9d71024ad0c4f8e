//! The `digitalocean` provider: a Droplet snapshot through the DigitalOcean API v2.
//!
//! Preflight loads the token, finds the Droplet (config or metadata service), reads it with the
//! token (which also opens and warms the HTTPS connection: DNS, TLS, roots), and refuses a
//! Droplet with a pending event. Inside the frozen window it sends exactly one
//! `POST /v2/droplets/{id}/actions`; "registered" is a 201 whose action is `in-progress` or
//! `completed`. With `thaw_after = "completed"` it holds the window until the action completes.

pub mod client;
pub mod token;
pub mod types;

use super::{Completion, ProviderError, Reconciled, Registration, SnapshotProvider};
use crate::config::{DigitalOceanSettings, ThawAfter};
use crate::freeze::plan::Target;
use crate::naming::OwnNames;
use crate::transaction::Pruned;
use client::{ApiError, Client};
use std::time::Duration;

/// Scopes a Droplet snapshot needs.
pub const SNAPSHOT_SCOPES: &[&str] = &["droplet:read", "droplet:update", "image:create", "actions:read"];
/// The scope retention needs as well.
pub const RETENTION_SCOPE: &str = "image:delete";

/// How often `thaw_after = "completed"` polls inside the window.
const IN_WINDOW_POLL: Duration = Duration::from_millis(250);

/// The longest pause between two polls while waiting for completion.
const POLL_MAX: Duration = Duration::from_secs(10);

pub struct DigitalOcean {
    settings: DigitalOceanSettings,
    /// Bound on the POST inside the window (the transaction bounds it too).
    max_freeze: Duration,
    client: Option<Client>,
    droplet_id: u64,
    requested_name: Option<String>,
    /// Actions of the Droplet seen in preflight: any other snapshot action is ours.
    known_actions: Vec<u64>,
    /// Whether retention will delete snapshots (one more scope).
    prunes: bool,
}

impl DigitalOcean {
    pub fn new(settings: DigitalOceanSettings, max_freeze: Duration, prunes: bool) -> Self {
        DigitalOcean {
            settings,
            max_freeze,
            client: None,
            droplet_id: 0,
            requested_name: None,
            known_actions: Vec::new(),
            prunes,
        }
    }

    fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .as_ref()
            .ok_or_else(|| ProviderError::new("preflight did not run"))
    }
}

fn api(context: &str, e: ApiError) -> ProviderError {
    ProviderError::with_source(context.to_string(), e)
}

#[async_trait::async_trait]
impl SnapshotProvider for DigitalOcean {
    fn name(&self) -> &'static str {
        "digitalocean"
    }

    async fn preflight(&mut self, _name: &str, _targets: &[Target]) -> Result<(), ProviderError> {
        let token = token::load(&self.settings.token_file).map_err(|e| ProviderError::new(e.to_string()))?;
        let http = client::http_client().map_err(|e| api("cannot set up HTTPS", e))?;
        self.droplet_id = match self.settings.droplet_id {
            Some(id) => id,
            None => client::droplet_id_from_metadata(
                &http,
                &self.settings.metadata_url,
                self.settings.api_timeout,
            )
            .await
            .map_err(|e| {
                api(
                    "cannot tell which Droplet this is; set `digitalocean.droplet_id` if the \
                         metadata service is not reachable",
                    e,
                )
            })?,
        };
        let mut scopes = SNAPSHOT_SCOPES.to_vec();
        if self.prunes {
            scopes.push(RETENTION_SCOPE);
        }
        let client = Client::new(
            http,
            &self.settings.api_url,
            token,
            &scopes,
            self.settings.api_timeout,
        );
        let id = self.droplet_id;
        // Reading the Droplet proves the token and warms the connection for the window.
        let droplet = client.droplet(id).await.map_err(|e| {
            let hint = match e {
                ApiError::Status { status: 404, .. } => {
                    " (no such Droplet for this token: check `digitalocean.droplet_id`)"
                }
                _ => "",
            };
            api(&format!("cannot read Droplet {id}{hint}"), e)
        })?;
        if droplet.locked {
            return Err(ProviderError::new(format!(
                "Droplet {id} ({}) is locked by a pending event; wait for it to finish and try again",
                droplet.name
            )));
        }
        let actions = client
            .droplet_actions(id)
            .await
            .map_err(|e| api(&format!("cannot list the actions of Droplet {id}"), e))?;
        if let Some(busy) = actions.iter().find(|a| a.in_progress()) {
            return Err(ProviderError::new(format!(
                "Droplet {id} has a pending event (action {} `{}` is in progress); wait for it to \
                 finish and try again",
                busy.id, busy.kind
            )));
        }
        self.known_actions = actions.iter().map(|a| a.id).collect();
        self.client = Some(client);
        Ok(())
    }

    async fn ready(&mut self) -> Result<(), ProviderError> {
        // Quiescing and syncing may have taken long enough for the server to close the idle
        // connection; one more call now keeps a warm one for the POST in the window.
        let id = self.droplet_id;
        self.client()?.droplet(id).await.map(drop).map_err(|e| {
            api(
                &format!("cannot reach the API right before the freeze (Droplet {id})"),
                e,
            )
        })
    }

    async fn request(&mut self, name: &str, _frozen: &[Target]) -> Result<Registration, ProviderError> {
        self.requested_name = Some(name.to_string());
        let client = self.client()?;
        // One attempt; the transaction bounds it by max_freeze as well.
        let action = client
            .snapshot_droplet(self.droplet_id, name, self.max_freeze)
            .await
            .map_err(|e| api("the snapshot request was not accepted", e))?;
        if action.errored() {
            return Err(ProviderError::new(format!(
                "snapshot action {} errored at once",
                action.id
            )));
        }
        let mut action = action;
        if self.settings.thaw_after == ThawAfter::Completed {
            while !action.completed() {
                tokio::time::sleep(IN_WINDOW_POLL).await;
                action = client
                    .action(action.id)
                    .await
                    .map_err(|e| api(&format!("cannot follow snapshot action {}", action.id), e))?;
                if action.errored() {
                    return Err(ProviderError::new(format!(
                        "snapshot action {} errored",
                        action.id
                    )));
                }
            }
        }
        Ok(Registration {
            action_id: action.id.to_string(),
            completed: action.completed(),
        })
    }

    async fn wait_completed(&mut self, registration: &Registration) -> Result<Completion, ProviderError> {
        let client = self.client()?;
        let action_id: u64 = registration
            .action_id
            .parse()
            .map_err(|_| ProviderError::new(format!("not an action id: {}", registration.action_id)))?;
        let mut delay = Duration::from_secs(1);
        loop {
            match client.action(action_id).await {
                Ok(a) if a.completed() => break,
                Ok(a) if a.errored() => {
                    return Err(ProviderError::new(format!(
                        "snapshot action {action_id} errored on DigitalOcean's side"
                    )))
                }
                Ok(_) => {}
                Err(e) if e.retryable() => tracing::warn!("polling action {action_id}: {e}"),
                Err(e) => return Err(api(&format!("cannot follow snapshot action {action_id}"), e)),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(POLL_MAX);
        }
        // The action does not name the image it made; find it by name among the Droplet's.
        let snapshots = client
            .droplet_snapshots(self.droplet_id)
            .await
            .map_err(|e| api("cannot list the Droplet's snapshots", e))?;
        let name = self.requested_name.as_deref().unwrap_or_default();
        let snapshot = snapshots.iter().rev().find(|s| s.name == name);
        Ok(Completion {
            snapshot_id: snapshot.map(|s| s.id.to_string()),
            size_bytes: snapshot.map(|s| (s.size_gigabytes * 1e9) as u64),
        })
    }

    async fn reconcile(&mut self) -> Option<Reconciled> {
        self.requested_name.as_ref()?;
        let client = self.client.as_ref()?;
        let actions = match client.droplet_actions(self.droplet_id).await {
            Ok(actions) => actions,
            Err(e) => {
                return Some(Reconciled {
                    action_id: None,
                    note: format!(
                        "could not check whether DigitalOcean registered the snapshot anyway ({e}); \
                         look for a new snapshot of Droplet {} before taking another",
                        self.droplet_id
                    ),
                })
            }
        };
        let ours = actions
            .iter()
            .find(|a| a.kind == "snapshot" && !self.known_actions.contains(&a.id));
        Some(match ours {
            Some(a) => Reconciled {
                action_id: Some(a.id.to_string()),
                note: format!(
                    "DigitalOcean registered snapshot action {} ({}) after the freeze had ended: that \
                     snapshot is crash-consistent at best; delete it if you do not want it",
                    a.id, a.status
                ),
            },
            None => Reconciled {
                action_id: None,
                note: "DigitalOcean did not register a snapshot from this request; nothing to clean up"
                    .into(),
            },
        })
    }

    async fn prune(&mut self, keep_last: usize, ours: &OwnNames) -> Result<Vec<Pruned>, ProviderError> {
        let client = self.client()?;
        // Only completed snapshots are listed; one still in progress is never touched.
        let mut mine: Vec<_> = client
            .droplet_snapshots(self.droplet_id)
            .await
            .map_err(|e| api("cannot list the Droplet's snapshots", e))?
            .into_iter()
            .filter(|s| ours.matches(&s.name))
            .collect();
        mine.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let excess = mine.len().saturating_sub(keep_last);
        let mut pruned = Vec::new();
        for old in mine.into_iter().take(excess) {
            client
                .delete_snapshot(old.id)
                .await
                .map_err(|e| api(&format!("cannot delete snapshot {} ({})", old.id, old.name), e))?;
            tracing::info!(id = old.id, name = %old.name, "deleted an old snapshot (retention)");
            pruned.push(Pruned {
                id: old.id.to_string(),
                name: old.name,
            });
        }
        Ok(pruned)
    }
}
