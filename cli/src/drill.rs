//! `freezeframe verify SNAPSHOT`: a restore drill through the DigitalOcean API, with the
//! operator's token (`DIGITALOCEAN_TOKEN`). It restores the Droplet snapshot, and the volume
//! snapshots of the same run, onto a new Droplet of the smallest size that fits, runs
//! `freezeframe-agent verify` there over SSH, records the result as a tag on the snapshot, and
//! destroys what it created on every path: success, failure, Ctrl-C, SIGTERM, timeout. All it
//! creates carries the tag `freezeframe-verify` and one of its own run, so `freezeframe verify
//! --cleanup` finds what a drill killed outright left behind.

use crate::commands::{Exit, Failure};
use freezeframe_agent::provider::digitalocean::client::{http_client, ApiError, Client};
use freezeframe_agent::provider::digitalocean::platform;
use freezeframe_agent::provider::digitalocean::{DropletCreate, Size, Snapshot, VolumeCreate};
use freezeframe_agent::verify::{MachineVerification, ProbeVerdict};
use serde::Serialize;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every drill's resources carry this tag; `--cleanup` destroys what carries it.
pub const DRILL_TAG: &str = "freezeframe-verify";

/// The restored copy must never snapshot itself: its timer and its agent (which serves
/// snapshots over D-Bus) are masked at first boot, before either can start.
const USER_DATA: &str = "#cloud-config\n\
bootcmd:\n  - [systemctl, mask, --now, freezeframe-snapshot.timer, freezeframe-agent.service]\n";

/// The restored Droplet's SSH host key, made for this drill: cloud-init installs it (the
/// image's own keys are deleted, no others made) and it is the only key ssh accepts from the
/// address, so a host that answers there with another key is never given the drill's login or
/// trusted with its verdict. The private half lives in memory only, never prints, and goes
/// with the drill; the directory (mode 700, the pinned known-hosts file) is removed on drop.
struct HostKey {
    dir: tempfile::TempDir,
    /// `ssh-ed25519 AAAA…`, without a comment.
    public: String,
    private: Private,
}

/// Text that holds a private key: its `Debug` prints `[redacted]`.
struct Private(String);

impl std::fmt::Debug for Private {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("public", &self.public)
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

impl HostKey {
    /// A new ed25519 key pair from `ssh-keygen`, in a private directory of its own; the
    /// private key's file is removed once read.
    fn generate() -> Result<HostKey, Failure> {
        let failed =
            |why: String| Failure::new(Exit::Failed, format!("cannot make the Droplet's host key: {why}"));
        let dir = tempfile::Builder::new()
            .prefix("freezeframe-verify-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| failed(e.to_string()))?;
        let file = dir.path().join("host_key");
        let mut keygen = std::process::Command::new("ssh-keygen");
        for name in freezeframe_agent::secret::SECRET_VARIABLES {
            keygen.env_remove(name);
        }
        let out = keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "freezeframe-verify", "-f"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(format!("cannot run ssh-keygen ({e}): install openssh-client")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "ssh-keygen failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let private = std::fs::read_to_string(&file).map_err(|e| failed(e.to_string()));
        let _ = std::fs::remove_file(&file);
        let private = Private(private?);
        let public =
            std::fs::read_to_string(file.with_extension("pub")).map_err(|e| failed(e.to_string()))?;
        let public: Vec<&str> = public.split_whitespace().take(2).collect();
        if public.len() != 2 || public[0] != "ssh-ed25519" {
            return Err(failed("ssh-keygen wrote no ed25519 public key".into()));
        }
        Ok(HostKey {
            dir,
            public: public.join(" "),
            private,
        })
    }

    /// The Droplet's user data: [`USER_DATA`], and this key as its only host key.
    fn user_data(&self) -> Private {
        let mut text = format!(
            "{USER_DATA}ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n"
        );
        for line in self.private.0.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push_str(&format!("  ed25519_public: {}\n", self.public));
        Private(text)
    }

    /// The known-hosts file that pins this key, under the name `alias` (written once).
    fn known_hosts(&self, alias: &str) -> Result<std::path::PathBuf, Stop> {
        let file = self.dir.path().join("known_hosts");
        if !file.exists() {
            std::fs::write(&file, format!("{alias} {}\n", self.public))
                .map_err(|e| Stop::Failed(format!("cannot write {}: {e}", file.display())))?;
        }
        Ok(file)
    }
}

/// What the drill is asked to do.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The Droplet snapshot, by id or name.
    pub snapshot: String,
    /// A size slug, instead of the smallest that fits.
    pub size: Option<String>,
    /// SSH keys for the new Droplet (ids or fingerprints); the image's own authorized keys
    /// work as well.
    pub ssh_keys: Vec<String>,
    /// Create without asking.
    pub yes: bool,
    /// The bound on the whole drill.
    pub timeout: Duration,
    /// The user ssh logs in as.
    pub user: String,
    /// The ssh command (`--ssh-command`).
    pub ssh_command: String,
    /// How often the API is asked whether the Droplet is up.
    pub poll: Duration,
}

/// What a drill did and found: `--json` prints it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillReport {
    /// The snapshot restored.
    pub snapshot_id: String,
    /// Its name.
    pub snapshot_name: String,
    /// The volume snapshots of the same run, restored with it.
    pub volume_snapshots: Vec<String>,
    /// The size the Droplet had, and its price an hour.
    pub size: String,
    /// USD an hour while it existed.
    pub price_hourly: f64,
    /// The Droplet it created, once created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub droplet_id: Option<u64>,
    /// Its public address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The volumes created from the volume snapshots, by name.
    pub volumes: Vec<String>,
    /// Seconds from the first request until the Droplet was up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub up_seconds: Option<f64>,
    /// Seconds from the first request until the verification's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_seconds: Option<f64>,
    /// What `freezeframe-agent verify` found on the restored Droplet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<MachineVerification>,
    /// The snapshot restores, and every check passed.
    pub verified: bool,
    /// Why the drill could not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The tags the snapshot got: the result, and the probe's verdict.
    pub recorded: Vec<String>,
    /// What the drill created and could not destroy (`freezeframe verify --cleanup` retries).
    pub left_behind: Vec<String>,
}

/// The scopes a drill's token needs, as the API names them.
pub const DRILL_SCOPES: &str = "droplet:create, droplet:read, droplet:delete, \
     block_storage:create, block_storage:delete, image:read, sizes:read and tag:create";

/// The API client for the drill, with the operator's token.
pub fn client(api_url: &str) -> Result<Client, Failure> {
    let token = std::env::var("DIGITALOCEAN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            Failure::new(
                Exit::Usage,
                format!(
                    "a restore drill creates a Droplet and volumes with your token: set \
                     DIGITALOCEAN_TOKEN to a token with {DRILL_SCOPES}"
                ),
            )
        })?;
    client_with(api_url, freezeframe_agent::secret::Secret::new(token.trim()))
}

/// The API client for the drill, with `token`.
pub fn client_with(api_url: &str, token: freezeframe_agent::secret::Secret) -> Result<Client, Failure> {
    let http =
        http_client(api_url).map_err(|e| Failure::new(Exit::Failed, format!("cannot set up HTTPS: {e}")))?;
    Ok(Client::new(
        http,
        api_url,
        token,
        &[
            "droplet:create",
            "droplet:read",
            "droplet:delete",
            "block_storage:create",
            "block_storage:delete",
            "image:read",
            "sizes:read",
            "tag:create",
        ],
        Duration::from_secs(30),
    ))
}

/// What a drill will create, found before anything is.
struct Plan {
    snapshot: Snapshot,
    volumes: Vec<Snapshot>,
    size: Size,
}

/// The snapshot, its run's volume snapshots and the size: every check before anything costs.
async fn plan(client: &Client, options: &DrillOptions) -> Result<Plan, Failure> {
    let api = |what: &str, e: ApiError| Failure::new(Exit::Failed, format!("{what}: {e}"));
    let snapshot = match client.snapshot(&options.snapshot).await {
        Ok(s) => s,
        Err(ApiError::Status { status: 404, .. }) => {
            let all = client
                .snapshots("droplet")
                .await
                .map_err(|e| api("cannot list the Droplet snapshots", e))?;
            let mut named = all.into_iter().filter(|s| s.name == options.snapshot);
            match (named.next(), named.next()) {
                (Some(s), None) => s,
                (None, _) => {
                    return Err(Failure::new(
                        Exit::Usage,
                        format!(
                            "no Droplet snapshot has the id or name `{}`: `freezeframe list` \
                             shows this machine's",
                            options.snapshot
                        ),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(Failure::new(
                        Exit::Usage,
                        format!("several snapshots are named `{}`: give the id", options.snapshot),
                    ))
                }
            }
        }
        Err(e) => return Err(api("cannot read the snapshot", e)),
    };
    if snapshot.resource_type != "droplet" {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "{} is a snapshot of a volume: give the Droplet's snapshot of the same run (its \
                 volumes are restored with it)",
                options.snapshot
            ),
        ));
    }
    let volumes = client
        .snapshots("volume")
        .await
        .map_err(|e| api("cannot list the volume snapshots", e))?
        .into_iter()
        .filter(|v| v.name == snapshot.name)
        .collect();
    let size = choose_size(client, &snapshot, options.size.as_deref()).await?;
    Ok(Plan {
        snapshot,
        volumes,
        size,
    })
}

/// The size asked for, or the cheapest on sale in the snapshot's region whose disk fits it.
async fn choose_size(client: &Client, snapshot: &Snapshot, asked: Option<&str>) -> Result<Size, Failure> {
    let region = snapshot.regions.first().map(String::as_str).unwrap_or_default();
    let sizes = client
        .sizes()
        .await
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot list the Droplet sizes: {e}")))?;
    let fits =
        |s: &Size| s.available && s.disk >= snapshot.min_disk_size && s.regions.iter().any(|r| r == region);
    match asked {
        Some(slug) => match sizes.into_iter().find(|s| s.slug == slug) {
            Some(s) if fits(&s) => Ok(s),
            Some(s) => Err(Failure::new(
                Exit::Usage,
                format!(
                    "size {slug} does not fit: the snapshot needs a {} GB disk in {region}, and \
                     {slug} has {} GB{}",
                    snapshot.min_disk_size,
                    s.disk,
                    if s.regions.iter().any(|r| r == region) {
                        ""
                    } else {
                        " and is not sold there"
                    }
                ),
            )),
            None => Err(Failure::new(
                Exit::Usage,
                format!("no Droplet size is named {slug}"),
            )),
        },
        None => sizes
            .into_iter()
            .filter(fits)
            .min_by(|a, b| a.price_hourly.total_cmp(&b.price_hourly))
            .ok_or_else(|| {
                Failure::new(
                    Exit::Failed,
                    format!(
                        "no size on sale in {region} has the {} GB disk the snapshot needs",
                        snapshot.min_disk_size
                    ),
                )
            }),
    }
}

/// Says what will be created and what it costs; asks, unless `--yes`.
fn consent(plan: &Plan, options: &DrillOptions) -> Result<(), Failure> {
    let volumes: f64 = plan.volumes.iter().map(|v| v.min_disk_size as f64).sum();
    eprintln!(
        "freezeframe: the drill creates a {} Droplet (${:.4}/hour) from snapshot {} ({}) in {}{}, \
         checks it, and destroys it; it is billed by the started hour",
        plan.size.slug,
        plan.size.price_hourly,
        plan.snapshot.name,
        plan.snapshot.id,
        plan.snapshot.regions.first().map(String::as_str).unwrap_or("?"),
        if plan.volumes.is_empty() {
            String::new()
        } else {
            format!(
                ", with {} volume{} ({volumes} GB) from the run's volume snapshots",
                plan.volumes.len(),
                if plan.volumes.len() == 1 { "" } else { "s" }
            )
        }
    );
    if options.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Exit::Usage,
            "the drill creates billed resources: pass --yes to go ahead without a terminal to ask on",
        ));
    }
    eprint!("Go ahead? [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(Exit::Usage, "nothing created: not confirmed"))
    }
}

/// Why a drill stopped before its answer.
enum Stop {
    Failed(String),
    Interrupted(&'static str),
    TimedOut,
}

/// Runs a drill: plan, consent, restore and verify (raced against signals and the timeout),
/// then cleanup and the record, whatever happened.
pub async fn run(client: &Client, options: &DrillOptions) -> Result<(Exit, DrillReport), Failure> {
    let plan = plan(client, options).await?;
    consent(&plan, options)?;
    // ssh-keygen waited for, and files read: off the async workers.
    let host_key = tokio::task::spawn_blocking(HostKey::generate)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let run_tag = format!(
        "{DRILL_TAG}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let report = Arc::new(Mutex::new(DrillReport {
        snapshot_id: plan.snapshot.id.clone(),
        snapshot_name: plan.snapshot.name.clone(),
        volume_snapshots: plan.volumes.iter().map(|v| v.id.clone()).collect(),
        size: plan.size.slug.clone(),
        price_hourly: plan.size.price_hourly,
        ..DrillReport::default()
    }));
    let stop = {
        let drill = restore_and_verify(client, options, &plan, &run_tag, &host_key, report.clone());
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot watch for SIGTERM: {e}")))?;
        tokio::select! {
            result = drill => result.err(),
            _ = tokio::signal::ctrl_c() => Some(Stop::Interrupted("SIGINT")),
            _ = sigterm.recv() => Some(Stop::Interrupted("SIGTERM")),
            _ = tokio::time::sleep(options.timeout) => Some(Stop::TimedOut),
        }
    };
    eprintln!("freezeframe: destroying what the drill created (tag {run_tag})");
    let left_behind = cleanup(client, &run_tag).await;
    let mut report = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.left_behind = left_behind;
    report.error = stop.map(|stop| match stop {
        Stop::Failed(why) => why,
        Stop::Interrupted(signal) => format!("interrupted by {signal}"),
        Stop::TimedOut => format!(
            "the drill did not finish within {} (--timeout)",
            humantime::format_duration(options.timeout)
        ),
    });
    if let Some(found) = report.verification.clone() {
        report.verified = found.verified && report.error.is_none();
        record(client, &plan.snapshot.id, &found, &mut report).await;
    }
    let exit = if report.verified && report.left_behind.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    };
    Ok((exit, report))
}

/// Tags the snapshot with the result, and with when the platform read its disk: the agent on
/// the Droplet reads that verdict back before its next runs (`platform.rs`).
async fn record(client: &Client, snapshot: &str, found: &MachineVerification, report: &mut DrillReport) {
    let result = if found.verified {
        platform::VERIFIED_TAG
    } else {
        platform::FAILED_TAG
    };
    let probe = match found.probe {
        ProbeVerdict::InsideWindow => Some(platform::INSIDE_WINDOW_TAG),
        ProbeVerdict::AfterThaw => Some(platform::AFTER_THAW_TAG),
        ProbeVerdict::NoMarkers => None,
    };
    for tag in std::iter::once(result).chain(probe) {
        match client.tag_snapshot(tag, snapshot, false).await {
            Ok(()) => report.recorded.push(tag.to_string()),
            Err(e) => eprintln!("freezeframe: cannot tag the snapshot {tag}: {e}"),
        }
    }
}

/// The drill proper: the Droplet, its volumes, and `freezeframe-agent verify` there. What it
/// learns goes into `report` as it goes, so an interrupted drill still says what it made.
async fn restore_and_verify(
    client: &Client,
    options: &DrillOptions,
    plan: &Plan,
    run_tag: &str,
    host_key: &HostKey,
    report: Arc<Mutex<DrillReport>>,
) -> Result<(), Stop> {
    let started = Instant::now();
    let note = |f: &dyn Fn(&mut DrillReport)| f(&mut report.lock().unwrap_or_else(|p| p.into_inner()));
    let tags = [DRILL_TAG.to_string(), run_tag.to_string()];
    let region = plan.snapshot.regions.first().cloned().unwrap_or_default();
    let image: u64 = plan
        .snapshot
        .id
        .parse()
        .map_err(|_| Stop::Failed(format!("snapshot id {} is not a number", plan.snapshot.id)))?;
    let name = format!("freezeframe-verify-{image}");
    eprintln!(
        "freezeframe: creating Droplet {name} ({}, {region})",
        plan.size.slug
    );
    let user_data = host_key.user_data();
    let droplet = client
        .create_droplet(&DropletCreate {
            name: &name,
            region: &region,
            size: &plan.size.slug,
            image,
            ssh_keys: &options.ssh_keys,
            tags: &tags,
            user_data: &user_data.0,
        })
        .await
        .map_err(|e| Stop::Failed(format!("cannot create the Droplet: {e}")))?;
    note(&|r| r.droplet_id = Some(droplet.id));
    let address = wait_until_up(client, droplet.id, options.poll).await?;
    note(&|r| {
        r.address = Some(address.clone());
        r.up_seconds = Some(started.elapsed().as_secs_f64());
    });
    let mut volume_names = Vec::new();
    for (n, snapshot) in plan.volumes.iter().enumerate() {
        let volume_name = format!("fv{}-{n}", run_tag.rsplit('-').next().unwrap_or_default());
        eprintln!(
            "freezeframe: restoring volume {volume_name} from volume snapshot {}",
            snapshot.id
        );
        let volume = client
            .create_volume(&VolumeCreate {
                name: &volume_name,
                size_gigabytes: snapshot.min_disk_size.max(1),
                region: &region,
                snapshot_id: &snapshot.id,
                tags: &tags,
            })
            .await
            .map_err(|e| Stop::Failed(format!("cannot create volume {volume_name}: {e}")))?;
        client
            .attach_volume(&volume.id, droplet.id, &region)
            .await
            .map_err(|e| Stop::Failed(format!("cannot attach volume {volume_name}: {e}")))?;
        volume_names.push(volume_name);
        note(&|r| r.volumes = volume_names.clone());
    }
    eprintln!("freezeframe: running freezeframe-agent verify on {address}");
    let alias = format!("freezeframe-verify-{}", droplet.id);
    let pinned = Pinned {
        known_hosts: host_key.known_hosts(&alias)?,
        alias,
    };
    let found = remote_verify(options, &address, &volume_names, &pinned).await?;
    note(&|r| {
        r.verified_seconds = Some(started.elapsed().as_secs_f64());
        r.verification = Some(found.clone());
    });
    Ok(())
}

/// Polls the Droplet until it is active with a public address.
async fn wait_until_up(client: &Client, id: u64, poll: Duration) -> Result<String, Stop> {
    loop {
        let droplet = client
            .droplet(id)
            .await
            .map_err(|e| Stop::Failed(format!("cannot read Droplet {id}: {e}")))?;
        if droplet.status == "active" {
            if let Some(ip) = droplet.networks.public_ipv4() {
                return Ok(ip.to_string());
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// The one host key ssh accepts from the restored Droplet: `known_hosts` lists it under
/// `alias` (ssh's `HostKeyAlias`), which is what ssh looks up instead of the address.
struct Pinned {
    known_hosts: std::path::PathBuf,
    alias: String,
}

/// `freezeframe-agent verify --json` on the restored Droplet over ssh, retried while ssh cannot
/// connect yet (sshd starts after the Droplet is reported active). Only the host key the drill
/// gave the Droplet is accepted: another one ends the drill before anything runs there.
async fn remote_verify(
    options: &DrillOptions,
    address: &str,
    volumes: &[String],
    pinned: &Pinned,
) -> Result<MachineVerification, Stop> {
    loop {
        let mut command = ssh_verify(options, address, volumes, pinned);
        let out = command
            .output()
            .await
            .map_err(|e| Stop::Failed(format!("cannot run {}: {e}", options.ssh_command)))?;
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(255)
            && ["Host key verification failed", "IDENTIFICATION HAS CHANGED"]
                .iter()
                .any(|w| said.contains(w))
        {
            return Err(Stop::Failed(format!(
                "{address} answered with an SSH host key other than the one the drill gave the \
                 restored Droplet: it is not that Droplet, or the image's cloud-init did not \
                 install the key from the user data (ssh_keys); nothing was run there and \
                 nothing it said is trusted. ssh said: {}",
                said.trim()
            )));
        }
        match out.status.code() {
            // ssh could not connect (yet): sshd may still be starting.
            Some(255)
                if [
                    "Connection refused",
                    "timed out",
                    "No route to host",
                    "Connection reset",
                ]
                .iter()
                .any(|w| said.contains(w)) =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Some(0 | 1) => {
                return serde_json::from_slice(&out.stdout).map_err(|e| {
                    Stop::Failed(format!(
                        "freezeframe-agent verify on {address} answered no report ({e}): {}",
                        said.trim()
                    ))
                })
            }
            _ => return Err(ssh_failure(options, address, &out.status, &said)),
        }
    }
}

/// The options that make ssh accept only the pinned host key, whatever the user's ssh_config
/// says: ssh keeps the first value it is given for an option, so these go before any word of
/// the user's `--ssh-command`. No connection sharing (a master socket the user's `ControlMaster
/// auto` left open to the same address would carry the session with no host-key check), and
/// no other source of keys (`KnownHostsCommand`, DNS) than the drill's own known-hosts file.
fn pinned_options(pinned: &Pinned) -> Vec<String> {
    let mut options: Vec<String> = [
        "StrictHostKeyChecking=yes",
        "GlobalKnownHostsFile=/dev/null",
        "KnownHostsCommand=none",
        "VerifyHostKeyDNS=no",
        "HostKeyAlgorithms=ssh-ed25519",
        "CheckHostIP=no",
        "UpdateHostKeys=no",
        "ControlMaster=no",
        "ControlPath=none",
    ]
    .map(String::from)
    .to_vec();
    options.push(format!("UserKnownHostsFile={}", pinned.known_hosts.display()));
    options.push(format!("HostKeyAlias={}", pinned.alias));
    options
        .into_iter()
        .flat_map(|option| ["-o".to_string(), option])
        .collect()
}

/// `ssh … USER@ADDRESS freezeframe-agent verify --json --volume …`, accepting only the pinned
/// host key ([`pinned_options`], before the user's own words); no forwarding to the host, and
/// no secret in ssh's environment.
fn ssh_verify(
    options: &DrillOptions,
    address: &str,
    volumes: &[String],
    pinned: &Pinned,
) -> tokio::process::Command {
    let mut words = options.ssh_command.split_whitespace();
    let mut command = tokio::process::Command::new(words.next().unwrap_or("ssh"));
    for name in freezeframe_agent::secret::SECRET_VARIABLES {
        command.env_remove(name);
    }
    command
        .args(pinned_options(pinned))
        .args(words)
        .args(crate::ssh::NO_FORWARDING)
        .args(["-T", "-o", "BatchMode=yes"])
        .arg("--")
        .arg(format!("{}@{address}", options.user))
        .args(["freezeframe-agent", "verify", "--json"]);
    for volume in volumes {
        command.args(["--volume", volume]);
    }
    command.kill_on_drop(true).stdin(std::process::Stdio::null());
    command
}

/// Why the remote verify could not run, with what to do.
fn ssh_failure(options: &DrillOptions, address: &str, status: &std::process::ExitStatus, said: &str) -> Stop {
    if status.code() == Some(127) {
        return Stop::Failed(format!(
            "freezeframe-agent is not installed on the snapshot's image, so {address} cannot \
             check itself: install the freezeframe-agent package on the machine that is \
             snapshotted"
        ));
    }
    let fix = if said.contains("Permission denied") {
        "the restored Droplet lets in the keys the snapshotted machine did, and those given with \
         --ssh-key (an id or fingerprint from your account): give yours with --ssh-key, or load \
         one of the others into an ssh agent"
            .to_string()
    } else {
        format!("{}@{address}", options.user)
            .parse::<crate::client::Host>()
            .map(|host| crate::ssh::diagnose(said, &host).2)
            .unwrap_or_default()
    };
    Stop::Failed(format!(
        "{} to {address} failed ({status}): {}; {fix}",
        options.ssh_command,
        said.trim()
    ))
}

/// Destroys every Droplet and volume that carries `tag`: the Droplets first (destroying one
/// detaches its volumes), then the volumes, waiting out an attachment that is still being
/// undone. What could not be destroyed, in words.
pub async fn cleanup(client: &Client, tag: &str) -> Vec<String> {
    let mut left = Vec::new();
    if let Err(e) = client.delete_droplets_tagged(tag).await {
        left.push(format!("the Droplets tagged {tag} ({e})"));
    }
    let volumes = match client.volumes().await {
        Ok(all) => all,
        Err(e) => {
            left.push(format!("the volumes tagged {tag}: cannot list them ({e})"));
            return left;
        }
    };
    for volume in volumes
        .iter()
        .filter(|v| v.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag)))
    {
        let mut attempt = 0;
        loop {
            match client.delete_volume(&volume.id).await {
                Ok(()) => break,
                // Still attached: the Droplet's destruction detaches it, in its own time.
                Err(ApiError::Status { status: 409, .. }) if attempt < 30 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    left.push(format!("volume {} ({}): {e}", volume.name, volume.id));
                    break;
                }
            }
        }
    }
    match client.droplets_with_tag(tag).await {
        Ok(droplets) => left.extend(droplets.iter().map(|d| format!("Droplet {} ({})", d.name, d.id))),
        Err(e) => left.push(format!("the Droplets tagged {tag}: cannot list them ({e})")),
    }
    left
}

/// The drill's report as text.
pub fn text(report: &DrillReport) -> String {
    let mut out = format!(
        "snapshot {} ({}): {}\n",
        report.snapshot_name,
        report.snapshot_id,
        if report.verified {
            "VERIFIED: it restores"
        } else {
            "NOT verified"
        }
    );
    if let (Some(id), Some(up)) = (report.droplet_id, report.up_seconds) {
        out.push_str(&format!(
            "  restored on Droplet {id} ({}, ${:.4}/hour), up in {up:.0} s\n",
            report.size, report.price_hourly
        ));
    }
    if let Some(found) = &report.verification {
        out.push_str(&verification_text(found));
    }
    if let Some(error) = &report.error {
        out.push_str(&format!("  drill failed: {error}\n"));
    }
    if !report.recorded.is_empty() {
        out.push_str(&format!(
            "  recorded on the snapshot as the tags {}\n",
            report.recorded.join(", ")
        ));
    }
    if report.left_behind.is_empty() {
        out.push_str("  everything the drill created is destroyed\n");
    } else {
        out.push_str(&format!(
            "  LEFT BEHIND: {} (run `freezeframe verify --cleanup`)\n",
            report.left_behind.join("; ")
        ));
    }
    out
}

fn probe_words(probe: ProbeVerdict) -> &'static str {
    match probe {
        ProbeVerdict::InsideWindow => "the disk was read inside the frozen window",
        ProbeVerdict::AfterThaw => "the disk was read AFTER the thaw",
        ProbeVerdict::NoMarkers => "no markers: when the disk was read cannot be told",
    }
}

/// What `freezeframe-agent verify` found on the restored Droplet, as lines of text.
fn verification_text(found: &MachineVerification) -> String {
    let mut out = String::new();
    out.push_str(&format!("  probe: {}\n", probe_words(found.probe)));
    for fs in &found.filesystems {
        out.push_str(&format!(
            "  {} ({}): {}\n",
            fs.mountpoint.display(),
            fs.fstype,
            if fs.markers.is_empty() {
                "no markers".to_string()
            } else {
                fs.markers.join(", ")
            }
        ));
    }
    for db in &found.databases {
        let status = if db.ok {
            db.checks.first().cloned().unwrap_or_else(|| "checked".into())
        } else {
            format!("FAILED: {}", db.problems.join("; "))
        };
        out.push_str(&format!(
            "  {} ({}): {status}\n",
            db.kind.label(),
            db.path.display()
        ));
    }
    for volume in &found.volumes {
        out.push_str(&format!(
            "  volume {}: {}\n",
            volume.name,
            if volume.found.verified() {
                "verified"
            } else {
                "NOT verified"
            }
        ));
        for db in volume.found.databases() {
            out.push_str(&format!(
                "    {} at {}: {}{}\n",
                db.kind.label(),
                db.path.display(),
                if db.ok { "recovered and checked" } else { "FAILED" },
                db.recovery_seconds
                    .map(|s| format!(" ({s:.1} s to recover)"))
                    .unwrap_or_default()
            ));
        }
    }
    for reason in &found.reasons {
        out.push_str(&format!("  why not: {reason}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The key as cloud-init reads it from the user data, and as ssh pins it; the private half
    /// in memory only, never in Debug output.
    #[test]
    fn the_host_key_goes_to_the_user_data_and_the_pin_and_never_prints() {
        let key = HostKey::generate().unwrap();
        let dir = key.dir.path().to_path_buf();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!dir.join("host_key").exists(), "the private key's file is left");
        let user_data = key.user_data().0;
        assert!(user_data.starts_with(USER_DATA), "{user_data}");
        let block: Vec<&str> = user_data
            .lines()
            .skip_while(|l| *l != "  ed25519_private: |")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| &l[4..])
            .collect();
        assert_eq!(block.join("\n"), key.private.0.trim_end());
        assert_eq!(block[0], "-----BEGIN OPENSSH PRIVATE KEY-----");
        assert!(user_data.ends_with(&format!("  ed25519_public: {}\n", key.public)));
        assert!(user_data.contains("\nssh_genkeytypes: []\n"), "{user_data}");
        let Ok(pin) = key.known_hosts("freezeframe-verify-7") else {
            panic!("cannot write the known-hosts file")
        };
        assert_eq!(
            std::fs::read_to_string(pin).unwrap(),
            format!("freezeframe-verify-7 {}\n", key.public)
        );
        let printed = format!("{key:?}");
        assert!(
            printed.contains("[redacted]") && !printed.contains(block[1]),
            "{printed}"
        );
        drop(key);
        assert!(!dir.exists(), "the key's directory is left");
    }

    /// The services whose memory holds the API token dump no core (systemd-coredump would keep
    /// it in the journal, where the adm and systemd-journal groups read it).
    #[test]
    fn the_services_holding_the_token_dump_no_core() {
        for (unit, text) in [
            (
                "freezeframe-agent.service",
                include_str!("../../packaging/systemd/freezeframe-agent.service"),
            ),
            (
                "freezeframe-drill.service",
                include_str!("../../packaging/systemd/freezeframe-drill.service"),
            ),
        ] {
            let service = text.split("[Service]").nth(1).unwrap_or_default();
            assert!(
                service.lines().any(|l| l.trim() == "LimitCORE=0"),
                "{unit} allows core dumps"
            );
        }
    }

    /// ssh keeps the first value of an option: the pins come before every word of a hostile
    /// `--ssh-command`, and shut out connection sharing and every other source of host keys.
    #[test]
    fn the_pins_come_before_the_users_words_and_shut_out_shared_connections() {
        let options = DrillOptions {
            snapshot: "s".into(),
            size: None,
            ssh_keys: Vec::new(),
            yes: true,
            timeout: Duration::from_secs(1),
            user: "root".into(),
            ssh_command: "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                          -o ControlPath=/tmp/shared -o KnownHostsCommand=/bin/echo"
                .into(),
            poll: Duration::from_secs(1),
        };
        let pinned = Pinned {
            known_hosts: "/run/drill/known_hosts".into(),
            alias: "freezeframe-verify-7".into(),
        };
        let command = ssh_verify(&options, "192.0.2.7", &[], &pinned);
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let users = args
            .iter()
            .position(|a| a == "StrictHostKeyChecking=no")
            .expect("the user's words are passed on");
        for pin in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/run/drill/known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "HostKeyAlias=freezeframe-verify-7",
            "KnownHostsCommand=none",
            "VerifyHostKeyDNS=no",
            "ControlMaster=no",
            "ControlPath=none",
        ] {
            let at = args.iter().position(|a| a == pin);
            assert!(
                at.is_some_and(|at| at < users && args[at - 1] == "-o"),
                "{pin} is not pinned before the user's words: {args:?}"
            );
        }
        assert_eq!(args[..users - 1], pinned_options(&pinned)[..], "{args:?}");
    }
}
