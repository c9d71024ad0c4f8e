//! The `digitalocean` provider: a Droplet snapshot through the DigitalOcean API v2.
//!
//! Preflight loads the token, finds the Droplet (config or metadata service), reads it with the
//! token (which also opens and warms the HTTPS connection: DNS, TLS, roots), and refuses a
//! Droplet with a pending event. Inside the frozen window it sends exactly one
//! `POST /v2/droplets/{id}/actions`; "registered" is a 201 whose action is `in-progress` or
//! `completed`. With `thaw_after = "completed"` it holds the window until the action completes.
//!
//! The API itself (calls, JSON, limits, tags) is the `freezeframe_digitalocean` crate; this
//! module adapts it to the transaction's `SnapshotProvider` port (`convert.rs`: its values as
//! the port's).

mod convert;
mod owed;
pub(crate) mod token;

use crate::config::{DigitalOceanSettings, ThawAfter};
use freezeframe_contract::SnapshotInfo;
use crate::transaction::ports::{
    ApiUsage, ClaimLimit, Completion, DevNum, DrillSeen, Labels, OwnedNames, ProviderError, Pruned, Reconciled,
    Registration, Retained, SnapshotProvider, Target, VolumeSnapshotRef,
};
use freezeframe_digitalocean::{labels, limits, platform, Action, ApiError, Client};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Scopes a Droplet snapshot needs.
pub(crate) const SNAPSHOT_SCOPES: &[&str] =
    &["droplet:read", "droplet:update", "image:create", "actions:read"];
/// The scopes snapshotting attached volumes needs as well.
pub(crate) const VOLUME_SCOPES: &[&str] = &["block_storage:read", "block_storage_snapshot:create"];
/// The scope that records a run's consistency on its snapshots (tags) with `--wait`; without
/// it the run warns and the snapshots go untagged.
pub(crate) const LABEL_SCOPE: &str = "tag:create";
/// The scope retention needs as well.
pub(crate) const RETENTION_SCOPE: &str = "image:delete";
/// The scopes retention needs for the snapshots of attached volumes.
pub(crate) const VOLUME_RETENTION_SCOPES: &[&str] = &[
    "block_storage:read",
    "block_storage_snapshot:read",
    "block_storage_snapshot:delete",
];

/// How often `thaw_after = "completed"` polls inside the window.
const IN_WINDOW_POLL: Duration = Duration::from_millis(250);

/// A connection that answered this recently is still open: `ready` need not call again to keep
/// it warm (servers keep idle connections for a minute or more). Each call counts against the
/// token's budget, which a fleet shares.
const STILL_WARM: Duration = Duration::from_secs(5);

/// The longest pause between two polls while waiting for completion.
const POLL_MAX: Duration = Duration::from_secs(10);

pub(crate) struct DigitalOcean {
    settings: DigitalOceanSettings,
    client: Option<Client>,
    droplet_id: u64,
    requested_name: Option<String>,
    /// Actions of the Droplet seen in preflight: any other snapshot action is ours.
    known_actions: Vec<u64>,
    /// Whether retention will delete snapshots (one more scope).
    prunes: bool,
    /// Attached volumes whose filesystems are frozen: snapshotted in the same window.
    volumes: Vec<PlannedVolume>,
    /// What restore drills learned about this platform, read in preflight.
    platform: Option<platform::Learned>,
    /// The Droplet's snapshots as this run last listed them (its wait, its retention): the
    /// tags earlier runs owe are put on them without listing again.
    listed: Option<Vec<freezeframe_digitalocean::DropletSnapshot>>,
}

#[derive(Debug, Clone)]
struct PlannedVolume {
    id: String,
    name: String,
    mountpoint: PathBuf,
}

/// The target that a volume's device carries, if one does. DigitalOcean volumes appear as
/// `<links>/scsi-0DO_Volume_<name>`, a link to the block device.
fn volume_target(links: &Path, name: &str, targets: &[Target]) -> Option<PathBuf> {
    let device = std::fs::canonicalize(links.join(format!("scsi-0DO_Volume_{name}"))).ok()?;
    let rdev = nix::sys::stat::stat(&device)
        .ok()
        .map(|st| DevNum::from_raw(st.st_rdev));
    targets
        .iter()
        .find(|t| {
            std::fs::canonicalize(&t.source).ok().as_deref() == Some(device.as_path())
                || (t.fstype != "btrfs" && Some(t.dev) == rdev)
        })
        .map(|t| t.mountpoint.clone())
}

impl DigitalOcean {
    /// The newest restore drill of this Droplet's snapshots, wherever it ran (its tags on the
    /// snapshot); none when there is none, or it cannot be read.
    pub(crate) async fn last_drill(&mut self) -> Option<DrillSeen> {
        // Only with the client this run's preflight connected: a run that never reached the
        // API does not start asking it now.
        let client = self.client.as_ref().filter(|_| self.droplet_id != 0)?;
        match platform::newest_drill(client, self.droplet_id).await {
            Ok(drilled) => drilled.map(convert::drill_seen),
            Err(e) => {
                tracing::info!("cannot read the restore drills' tags for the metrics (image:read): {e}");
                None
            }
        }
    }

    /// Under `thaw_after = "registered"`, what drills found about when this platform reads a
    /// disk. Not knowing is no reason to stop a snapshot: it is said, and the run goes on.
    async fn learn_platform(&self, client: &Client) -> Option<platform::Learned> {
        if self.settings.thaw_after != ThawAfter::Registered {
            return None;
        }
        match platform::learned(client, self.droplet_id).await {
            Ok(learned) => learned,
            Err(e) => {
                tracing::warn!(
                    "cannot read what restore drills found about this platform (a token with \
                     image:read can): {e}"
                );
                None
            }
        }
    }

    pub(crate) fn new(settings: DigitalOceanSettings, prunes: bool) -> Self {
        DigitalOcean {
            settings,
            client: None,
            droplet_id: 0,
            requested_name: None,
            known_actions: Vec::new(),
            prunes,
            volumes: Vec::new(),
            platform: None,
            listed: None,
        }
    }

    /// Loads the token, finds the Droplet, and makes a client that names `scopes` when the
    /// API refuses it.
    async fn connect(&mut self, scopes: &[&'static str]) -> Result<Client, ProviderError> {
        let token_file = &self.settings.token_file;
        let token = token::load(token_file).map_err(|e| {
            let fix = match &e {
                token::TokenError::File(crate::secret::SecretFileError::TooOpen { file, .. }) => {
                    format!("chmod 600 {}", file.display())
                }
                _ => format!(
                    "store the token with `freezeframe-agent setup-token` (it writes {}, mode 600), \
                     or pass it as the systemd credential `{}`",
                    token_file.display(),
                    token::CREDENTIAL_NAME
                ),
            };
            ProviderError::setup(e.to_string()).with_fix(fix)
        })?;
        let http = freezeframe_digitalocean::http_client(&self.settings.api_url)
            .map_err(|e| api("cannot set up HTTPS", e))?;
        self.droplet_id = match self.settings.droplet_id {
            Some(id) => id,
            None => freezeframe_digitalocean::droplet_id_from_metadata(
                &http,
                &self.settings.metadata_url,
                self.settings.api_timeout,
            )
            .await
            .map_err(|e| no_droplet_id(&self.settings.metadata_url, e))?,
        };
        Ok(Client::new(
            http,
            &self.settings.api_url,
            token.into(),
            scopes,
            self.settings.api_timeout,
        ))
    }

    /// Keeps the client of this run, or makes one for a call outside a transaction.
    async fn ensure_connected(&mut self, scopes: &[&'static str]) -> Result<(), ProviderError> {
        if self.client.is_none() {
            self.client = Some(self.connect(scopes).await?);
        }
        Ok(())
    }

    fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .as_ref()
            .ok_or_else(|| ProviderError::new("preflight did not run"))
    }

    /// This Droplet's completed snapshots, oldest first, with their drills' results.
    pub(crate) async fn list(&mut self) -> Result<Vec<SnapshotInfo>, ProviderError> {
        self.ensure_connected(&["droplet:read", "image:read"]).await?;
        let (id, client) = (self.droplet_id, self.client()?);
        // The account's Droplet snapshots, with their tags (the Droplet's own list has none).
        let mut snapshots: Vec<SnapshotInfo> = client
            .snapshots("droplet")
            .await
            .map_err(|e| api(&format!("cannot list the snapshots of Droplet {id}"), e))?
            .into_iter()
            .filter(|s| s.resource_id == id.to_string())
            .map(|s| SnapshotInfo {
                consistency: labels::recorded(s.tags.as_deref().unwrap_or_default()).map(convert::recorded),
                id: s.id,
                name: s.name,
                created_at: s.created_at,
                size_bytes: Some((s.size_gigabytes * 1e9) as u64),
                drill: None,
                group: None,
            })
            .collect();
        snapshots.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        match platform::drill_results(client).await {
            Ok(results) => {
                for s in &mut snapshots {
                    s.drill =
                        s.id.parse()
                            .ok()
                            .and_then(|id: u64| results.get(&id).copied())
                            .map(|(result, _)| convert::drill_result(result));
                }
            }
            Err(e) => tracing::warn!("cannot read the restore drills' results: {e}"),
        }
        Ok(snapshots)
    }

    /// The Droplet its snapshots are of, once preflight learned it.
    pub(crate) fn droplet_id(&self) -> Option<u64> {
        (self.droplet_id != 0).then_some(self.droplet_id)
    }

    /// Retention for the volumes attached now: of each, all but the newest `keep_last`
    /// snapshots that this machine's runs made (named like its Droplet snapshots). Without it
    /// a volume reaches DigitalOcean's 25 and every later run fails in preflight.
    async fn prune_volumes(
        &mut self,
        keep_last: usize,
        ours: &dyn OwnedNames,
        dry_run: bool,
    ) -> Result<Vec<Pruned>, ProviderError> {
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| ProviderError::new("preflight did not run"))?;
        client.add_scopes(VOLUME_RETENTION_SCOPES);
        let id = self.droplet_id;
        let droplet = client
            .droplet(id)
            .await
            .map_err(|e| api(&format!("cannot read Droplet {id} for its volumes"), e))?;
        let mut pruned = Vec::new();
        for volume_id in &droplet.volume_ids {
            let mut mine: Vec<_> = client
                .volume_snapshots(volume_id)
                .await
                .map_err(|e| api(&format!("cannot list the snapshots of volume {volume_id}"), e))?
                .into_iter()
                .filter(|s| ours.is_ours(&s.name))
                .collect();
            mine.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            let excess = mine.len().saturating_sub(keep_last);
            for old in mine.into_iter().take(excess) {
                if !dry_run {
                    client.delete_volume_snapshot(&old.id).await.map_err(|e| {
                        api(
                            &format!(
                                "cannot delete snapshot {} ({}) of volume {volume_id}",
                                old.id, old.name
                            ),
                            e,
                        )
                    })?;
                    tracing::info!(id = %old.id, name = %old.name, volume = %volume_id, "deleted an old volume snapshot (retention)");
                }
                pruned.push(Pruned {
                    id: old.id,
                    name: old.name,
                });
            }
        }
        Ok(pruned)
    }
}

/// The volume snapshots of one request: those made, and those that failed.
#[derive(Default)]
struct Group {
    made: Vec<VolumeSnapshotRef>,
    failed: Vec<String>,
}

impl Group {
    /// The Droplet's action if it and every volume snapshot were accepted; otherwise an error
    /// that names what was made anyway (the group is incomplete, and the user must know).
    fn whole(&self, action: Result<Action, ApiError>) -> Result<Action, ProviderError> {
        let made_anyway = |separator: &str| {
            if self.made.is_empty() {
                String::new()
            } else {
                format!("{separator}{}", self.made_list())
            }
        };
        let action = match action {
            Ok(action) if !action.errored() => action,
            Ok(action) => {
                return Err(ProviderError::new(format!(
                    "snapshot action {} errored at once{}",
                    action.id,
                    made_anyway("; made anyway: ")
                )))
            }
            Err(e) if self.made.is_empty() => return Err(api("the snapshot request was not accepted", e)),
            Err(e) => {
                return Err(api(
                    &format!(
                        "the Droplet snapshot was not accepted, but these were made: {}",
                        self.made_list()
                    ),
                    e,
                ))
            }
        };
        if !self.failed.is_empty() {
            return Err(ProviderError::new(format!(
                "not every volume snapshot was accepted, so the group is incomplete: {}; made: snapshot \
                 action {}{}",
                self.failed.join("; "),
                action.id,
                made_anyway(", ")
            )));
        }
        Ok(action)
    }

    fn made_list(&self) -> String {
        self.made
            .iter()
            .map(|m| format!("volume snapshot {} of {}", m.snapshot_id, m.volume_name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// With `thaw_after = "completed"`: polls the action, inside the window, until it completed.
async fn follow_until_completed(client: &Client, mut action: Action) -> Result<Action, ProviderError> {
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
    Ok(action)
}

/// Why the metadata service could not tell which Droplet this is, with the one fix for it:
/// no answer means this is not a Droplet (or its network is down); an answer that is not the
/// Droplet's metadata means something else answers at that address.
fn no_droplet_id(metadata_url: &str, e: ApiError) -> ProviderError {
    let set_id = "set `digitalocean.droplet_id` to the id of the Droplet to snapshot (the number \
                  in its control panel address)";
    let (message, fix) = match &e {
        ApiError::Timeout { .. } | ApiError::Transport { .. } | ApiError::Tls { .. } => (
            format!(
                "cannot tell which Droplet this is: the metadata service ({metadata_url}) did not \
                 answer ({e}), so this machine does not look like a Droplet"
            ),
            format!(
                "on a Droplet, check its network (the metadata service is 169.254.169.254); \
                 elsewhere, {set_id}, or use `snapshot.provider = \"local-image\"`"
            ),
        ),
        other => (
            format!(
                "cannot tell which Droplet this is: the metadata service ({metadata_url}) answered, \
                 but not with this Droplet's metadata ({})",
                match other {
                    ApiError::Decode { problem, .. } => problem.clone(),
                    other => other.to_string(),
                }
            ),
            set_id.to_string(),
        ),
    };
    // The message holds the cause in its own words: the fix ends it.
    ProviderError::new(format!("{message}; {fix}")).with_fix(fix)
}

fn api(context: &str, e: ApiError) -> ProviderError {
    ProviderError::with_source(context.to_string(), e)
}

#[async_trait::async_trait]
impl SnapshotProvider for DigitalOcean {
    fn name(&self) -> &'static str {
        "digitalocean"
    }

    async fn preflight(&mut self, _name: &str, targets: &[Target]) -> Result<(), ProviderError> {
        let mut scopes = SNAPSHOT_SCOPES.to_vec();
        if self.prunes {
            scopes.push(RETENTION_SCOPE);
        }
        let mut client = self.connect(&scopes).await?;
        let id = self.droplet_id;
        // Reading the Droplet proves the token and warms the connection for the window.
        let droplet = client.droplet(id).await.map_err(|e| {
            // A token the API refuses, or a Droplet id it does not know, is the configuration's
            // to fix (exit 2), as a missing token is.
            let setup = matches!(
                e,
                ApiError::Unauthorized { .. }
                    | ApiError::Status {
                        status: 401 | 403 | 404,
                        ..
                    }
            );
            let token_file = self.settings.token_file.display();
            let (cause, fix) = match e {
                ApiError::Status { status: 404, .. } => (
                    " (no such Droplet for this token)",
                    "set `digitalocean.droplet_id` to a Droplet of the token's account".to_string(),
                ),
                ApiError::Unauthorized { status: 401, .. } => (
                    "",
                    format!(
                        "store a new token with `freezeframe-agent setup-token` (it writes {token_file})"
                    ),
                ),
                ApiError::Unauthorized { .. } => (
                    "",
                    format!(
                        "store a token with those scopes with `freezeframe-agent setup-token` (it \
                         writes {token_file})"
                    ),
                ),
                _ => (
                    "",
                    format!("check `digitalocean.api_url` ({})", self.settings.api_url),
                ),
            };
            // The fix in the message too: the report is where a failed run is read.
            let error = ProviderError::with_source(format!("cannot read Droplet {id}{cause}: {e}; {fix}"), e)
                .with_fix(fix);
            if setup {
                error.into_setup()
            } else {
                error
            }
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
        self.volumes.clear();
        if self.settings.volumes && !droplet.volume_ids.is_empty() {
            client.add_scopes(VOLUME_SCOPES);
            for volume_id in &droplet.volume_ids {
                let volume = client.volume(volume_id).await.map_err(|e| {
                    api(
                        &format!("cannot read volume {volume_id} attached to Droplet {id}"),
                        e,
                    )
                })?;
                match volume_target(&self.settings.volume_links, &volume.name, targets) {
                    Some(mountpoint) => {
                        limits::check_volume(&client, &volume.id, &volume.name)
                            .await
                            .map_err(|e| ProviderError::new(format!("{e}; nothing was frozen")))?;
                        self.volumes.push(PlannedVolume {
                            id: volume.id,
                            name: volume.name,
                            mountpoint,
                        })
                    }
                    None => tracing::warn!(
                        "volume {} ({volume_id}) is not among the filesystems to freeze: it is not snapshotted",
                        volume.name
                    ),
                }
            }
        }
        self.platform = self.learn_platform(&client).await;
        self.client = Some(client);
        Ok(())
    }

    fn claim_limit(&self) -> Option<ClaimLimit> {
        self.platform.as_ref().and_then(convert::claim_limit)
    }

    async fn ready(&mut self) -> Result<(), ProviderError> {
        // Quiescing and syncing may have taken long enough for the server to close the idle
        // connection; one more call now keeps a warm one for the POST in the window. It also
        // waits out a rate limit (429 and its retry-after) here, outside the window. When the
        // last call was answered a moment ago, both hold already.
        let id = self.droplet_id;
        let client = self.client()?;
        let warm = || async {
            if client
                .usage()
                .succeeded
                .is_some_and(|at| at.elapsed() < STILL_WARM)
            {
                return Ok(());
            }
            client.droplet(id).await.map(drop).map_err(|e| {
                api(
                    &format!("cannot reach the API right before the freeze (Droplet {id})"),
                    e,
                )
            })
        };
        warm().await?;
        // The window's requests must find the hour's budget: a run that could not get them
        // does not freeze yet.
        let needed = 1 + self.volumes.len() as u64;
        let usage = client.usage();
        let Some(remaining) = usage.remaining.filter(|r| *r < needed) else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let wait = Duration::from_secs(usage.reset.unwrap_or(u64::MAX).saturating_sub(now));
        if wait > client.max_wait() {
            return Err(ProviderError::new(format!(
                "the API token has {remaining} requests left this hour and the snapshot needs {needed}                  inside its window (the hour's budget frees in {}): nothing was frozen; try again then,                  or spread the runs that share this token",
                humantime::format_duration(wait)
            )));
        }
        tracing::warn!(
            remaining,
            needed,
            "the token's hourly API budget is spent: waiting {} before freezing",
            humantime::format_duration(wait)
        );
        tokio::time::sleep(wait).await;
        warm().await
    }

    fn usage(&self) -> ApiUsage {
        self.client
            .as_ref()
            .map_or_else(ApiUsage::default, |c| convert::usage(c.usage()))
    }

    async fn request(
        &mut self,
        name: &str,
        frozen: &[Target],
        max_freeze: Duration,
    ) -> Result<Registration, ProviderError> {
        self.requested_name = Some(name.to_string());
        let client = self.client()?;
        let volumes: Vec<&PlannedVolume> = self
            .volumes
            .iter()
            .filter(|v| frozen.iter().any(|t| t.mountpoint == v.mountpoint))
            .collect();
        // The Droplet and its volumes in the same window, all at once: one consistent group.
        // One attempt each; the transaction bounds them by max_freeze as well.
        let (action, volume_results) = tokio::join!(
            client.snapshot_droplet(self.droplet_id, name, max_freeze),
            futures_util::future::join_all(
                volumes
                    .iter()
                    .map(|v| client.snapshot_volume(&v.id, name, max_freeze))
            )
        );
        let mut group = Group::default();
        for (v, result) in volumes.iter().zip(volume_results) {
            match result {
                Ok(snapshot) => group.made.push(VolumeSnapshotRef {
                    volume_id: v.id.clone(),
                    volume_name: v.name.clone(),
                    mountpoint: v.mountpoint.clone(),
                    snapshot_id: snapshot.id,
                }),
                Err(e) => group.failed.push(format!("volume {} ({}): {e}", v.name, v.id)),
            }
        }
        let mut action = group.whole(action)?;
        if self.settings.thaw_after == ThawAfter::Completed {
            action = follow_until_completed(client, action).await?;
        }
        Ok(Registration {
            action_id: action.id.to_string(),
            completed: action.completed(),
            volume_snapshots: group.made,
            location: None,
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
        let completion = Completion {
            snapshot_id: snapshot.map(|s| s.id.to_string()),
            size_bytes: snapshot.map(|s| (s.size_gigabytes * 1e9) as u64),
        };
        self.listed = Some(snapshots);
        Ok(completion)
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



    async fn label(
        &mut self,
        registration: &Registration,
        completion: &Completion,
        labels: &Labels,
    ) -> Result<(), ProviderError> {
        if let Some(client) = self.client.as_mut() {
            client.add_scopes(&[LABEL_SCOPE]);
        }
        let client = self.client()?;
        let images: Vec<String> = completion.snapshot_id.iter().cloned().collect();
        let volumes: Vec<String> = registration
            .volume_snapshots
            .iter()
            .map(|v| v.snapshot_id.clone())
            .collect();
        let mut tags = vec![labels::consistency_tag(convert::level(labels.consistency.into()))];
        tags.extend(labels.group.as_deref().map(labels::group_tag));
        for tag in tags {
            client
                .tag_snapshots(&tag, &images, &volumes)
                .await
                .map_err(|e| api(&format!("cannot tag the snapshots {tag}"), e))?;
        }
        Ok(())
    }

    async fn prune(
        &mut self,
        keep_last: usize,
        ours: &dyn OwnedNames,
        dry_run: bool,
    ) -> Result<Retained, ProviderError> {
        self.ensure_connected(&["droplet:read", "image:read", RETENTION_SCOPE])
            .await?;
        let client = self.client()?;
        // Only completed snapshots are listed; one still in progress is never touched.
        let listed = client
            .droplet_snapshots(self.droplet_id)
            .await
            .map_err(|e| api("cannot list the Droplet's snapshots", e))?;
        let mut mine: Vec<_> = listed.iter().filter(|s| ours.is_ours(&s.name)).cloned().collect();
        mine.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let excess = mine.len().saturating_sub(keep_last);
        let kept = mine.len() - excess;
        let mut pruned = Vec::new();
        for old in mine.into_iter().take(excess) {
            if !dry_run {
                client
                    .delete_snapshot(old.id)
                    .await
                    .map_err(|e| api(&format!("cannot delete snapshot {} ({})", old.id, old.name), e))?;
                tracing::info!(id = old.id, name = %old.name, "deleted an old snapshot (retention)");
            }
            pruned.push(Pruned {
                id: old.id.to_string(),
                name: old.name,
            });
        }
        // What is left, for the tags earlier runs owe.
        let deleted: Vec<String> = pruned.iter().filter(|_| !dry_run).map(|p| p.id.clone()).collect();
        self.listed = Some(
            listed
                .into_iter()
                .filter(|s| !deleted.contains(&s.id.to_string()))
                .collect(),
        );
        if self.settings.volumes {
            pruned.extend(self.prune_volumes(keep_last, ours, dry_run).await?);
        }
        Ok(Retained { pruned, kept })
    }
}
