//! `freezeframe verify SNAPSHOT`: a restore drill through the DigitalOcean API, with the
//! operator's token (`DIGITALOCEAN_TOKEN`). It restores the Droplet snapshot, and the volume
//! snapshots of the same run, onto a new Droplet of the smallest size that fits, runs
//! `freezeframe-agent verify` there over SSH, records the result as a tag on the snapshot, and
//! destroys what it created on every path: success, failure, Ctrl-C, SIGTERM, timeout. A signal
//! or the timeout stops the waits at once, but a request that creates something is answered
//! before the drill stops (a request the API received makes its Droplet or volume whether or
//! not anyone reads the answer): cleanup then finds it. All it creates carries the tag
//! `freezeframe-verify` and one of its own run, so `freezeframe verify --cleanup` finds what a
//! drill killed outright left behind.

use crate::agent::{Exit, Failure};
use crate::api::Access;
use freezeframe_contract::verification::{MachineVerification, ProbeVerdict};
use freezeframe_digitalocean::platform;
use freezeframe_digitalocean::{ApiError, Client};
use freezeframe_digitalocean::{DropletCreate, Size, Snapshot, VolumeCreate};
use serde::Serialize;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use super::ports::Api;

mod estimate;
mod host_key;
mod remote;
mod text;

pub use estimate::Expected;

use host_key::HostKey;
#[cfg(test)]
use remote::{pinned_options, ssh_verify};
use remote::{LastTry, Pinned, Remote, Ssh};
pub(crate) use text::text;

/// Every drill's resources carry this tag; `--cleanup` destroys what carries it.
pub const DRILL_TAG: &str = "freezeframe-verify";

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
    /// What it was expected to take and cost, said before anything was created.
    pub expected: Expected,
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

/// What a drill does with the API: the scopes its token needs, as the API names them.
pub(crate) const ACCESS: Access = Access {
    scopes: &[
        "droplet:create",
        "droplet:read",
        "droplet:delete",
        "block_storage:create",
        "block_storage:delete",
        "image:read",
        "sizes:read",
        "tag:create",
    ],
    timeout: Duration::from_secs(30),
    why: "a restore drill creates a Droplet and volumes with your token",
};

/// What a drill will create, found before anything is.
struct Plan {
    snapshot: Snapshot,
    volumes: Vec<Snapshot>,
    size: Size,
}

/// The snapshot, its run's volume snapshots and the size: every check before anything costs.
async fn plan(client: &impl Api, options: &DrillOptions) -> Result<Plan, Failure> {
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
async fn choose_size(client: &impl Api, snapshot: &Snapshot, asked: Option<&str>) -> Result<Size, Failure> {
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

/// Says what will be created, how long it is expected to take and what it costs; asks, unless
/// `--yes`.
fn consent(plan: &Plan, expected: &Expected, options: &DrillOptions) -> Result<(), Failure> {
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
    eprintln!("freezeframe: {}", estimate::words(expected, options));
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
#[derive(Debug, Clone)]
enum Stop {
    Failed(String),
    Interrupted(&'static str),
    TimedOut,
}

/// Runs a drill: plan, consent, restore and verify (raced against signals and the timeout),
/// then cleanup and the record, whatever happened.
pub async fn run(client: &Client, options: &DrillOptions) -> Result<(Exit, DrillReport), Failure> {
    run_on(client, &Ssh, options).await
}

/// [`run`], with `client` for the API and `remote` for the check on the restored Droplet.
async fn run_on(
    client: &impl Api,
    remote: &impl Remote,
    options: &DrillOptions,
) -> Result<(Exit, DrillReport), Failure> {
    let plan = plan(client, options).await?;
    let expected = estimate::expect(&plan);
    consent(&plan, &expected, options)?;
    // ssh-keygen waited for, and files read: off the async workers.
    let host_key = crate::blocking::run(HostKey::generate).await?;
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
        expected,
        ..DrillReport::default()
    }));
    let last_try = LastTry::default();
    let (stopping, stopped) = tokio::sync::watch::channel(None);
    let stop = {
        let drill = restore_and_verify(
            client,
            remote,
            options,
            &plan,
            &run_tag,
            &host_key,
            report.clone(),
            &last_try,
            stopped,
        );
        tokio::pin!(drill);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot watch for SIGTERM: {e}")))?;
        let why = tokio::select! {
            result = &mut drill => Ok(result.err()),
            _ = tokio::signal::ctrl_c() => Err(Stop::Interrupted("SIGINT")),
            _ = sigterm.recv() => Err(Stop::Interrupted("SIGTERM")),
            _ = tokio::time::sleep(options.timeout) => Err(Stop::TimedOut),
        };
        match why {
            Ok(ended) => ended,
            Err(why) => {
                // The waits stop at once; a request that creates something is answered first,
                // so cleanup finds what it made. A second signal stops that wait too.
                let _ = stopping.send(Some(why.clone()));
                tokio::select! {
                    _ = &mut drill => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = sigterm.recv() => {}
                }
                Some(why)
            }
        }
    };
    eprintln!("freezeframe: destroying what the drill created (tag {run_tag})");
    let left_behind = cleanup(client, &run_tag).await;
    let mut report = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.left_behind = left_behind;
    // Cut short while ssh could not connect: what it said last is why.
    let waiting_on = last_try
        .get()
        .map(|why| format!("; the last ssh attempt failed: {why}"))
        .unwrap_or_default();
    report.error = stop.map(|stop| match stop {
        Stop::Failed(why) => why,
        Stop::Interrupted(signal) => format!("interrupted by {signal}{waiting_on}"),
        Stop::TimedOut => format!(
            "the drill did not finish within {} (--timeout){waiting_on}",
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

/// Tags the snapshot with the result, when the drill ran, and when the platform read its disk:
/// the agent on the Droplet reads the verdict back before its next runs (`platform.rs`), and
/// its metrics report the newest drill's result and time.
async fn record(client: &impl Api, snapshot: &str, found: &MachineVerification, report: &mut DrillReport) {
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
    // When it ran: the Droplet's agent reports the newest drill's time in its metrics.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let when = platform::drilled_tag(now);
    for tag in [result, when.as_str()].into_iter().chain(probe) {
        match client.tag_snapshot(tag, snapshot, false).await {
            Ok(()) => report.recorded.push(tag.to_string()),
            Err(e) => eprintln!("freezeframe: cannot tag the snapshot {tag}: {e}"),
        }
    }
}

/// The drill proper: the Droplet, its volumes, and `freezeframe-agent verify` there. What it
/// learns goes into `report` as it goes, so an interrupted drill still says what it made, and
/// why ssh could not connect into `last_try`. Once `stop` holds a reason, it returns it: at
/// once from a wait, after the answer from a request that creates something.
#[allow(clippy::too_many_arguments)]
async fn restore_and_verify(
    client: &impl Api,
    remote: &impl Remote,
    options: &DrillOptions,
    plan: &Plan,
    run_tag: &str,
    host_key: &HostKey,
    report: Arc<Mutex<DrillReport>>,
    last_try: &LastTry,
    stop: tokio::sync::watch::Receiver<Option<Stop>>,
) -> Result<(), Stop> {
    let checkpoint = || stop.borrow().clone().map_or(Ok(()), Err);
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
    checkpoint()?;
    let address = until_stopped(&stop, wait_until_up(client, droplet.id, options.poll)).await?;
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
        checkpoint()?;
        client
            .attach_volume(&volume.id, droplet.id, &region)
            .await
            .map_err(|e| Stop::Failed(format!("cannot attach volume {volume_name}: {e}")))?;
        volume_names.push(volume_name);
        note(&|r| r.volumes = volume_names.clone());
        checkpoint()?;
    }
    eprintln!("freezeframe: running freezeframe-agent verify on {address}");
    let alias = format!("freezeframe-verify-{}", droplet.id);
    let pinned = Pinned {
        known_hosts: host_key.known_hosts(&alias)?,
        alias,
    };
    let found = until_stopped(
        &stop,
        remote.verify(options, &address, &volume_names, &pinned, last_try),
    )
    .await?;
    note(&|r| {
        r.verified_seconds = Some(started.elapsed().as_secs_f64());
        r.verification = Some(found.clone());
    });
    Ok(())
}

/// `work`, unless `stop` gets a reason first: then that reason, and `work` is dropped.
async fn until_stopped<T>(
    stop: &tokio::sync::watch::Receiver<Option<Stop>>,
    work: impl std::future::Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    let mut stop = stop.clone();
    tokio::select! {
        done = work => done,
        Ok(why) = stop.wait_for(Option::is_some) => match why.clone() {
            Some(why) => Err(why),
            None => unreachable!("waited for a reason"),
        },
    }
}

/// Polls the Droplet until it is active with a public address.
async fn wait_until_up(client: &impl Api, id: u64, poll: Duration) -> Result<String, Stop> {
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

/// Destroys every Droplet and volume that carries `tag`: the Droplets first (destroying one
/// detaches its volumes), then the volumes, waiting out an attachment that is still being
/// undone. What could not be destroyed, in words.
pub async fn cleanup(client: &impl Api, tag: &str) -> Vec<String> {
    let mut left = Vec::new();
    let destroyed = client.delete_droplets_tagged(tag).await;
    if let Err(e) = &destroyed {
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
                // Still attached: the Droplet's destruction detaches it, in its own time (when
                // it was destroyed: otherwise it stays attached, and `--cleanup` takes both).
                Err(ApiError::Status { status: 409, .. }) if attempt < 30 && destroyed.is_ok() => {
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

#[cfg(test)]
mod drill_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// The key as cloud-init reads it from the user data, and as ssh pins it; the private half
    /// in memory only, never in Debug output.
    /// The services whose memory holds the API token dump no core (systemd-coredump would keep
    /// it in the journal, where the adm and systemd-journal groups read it).
    #[test]
    fn the_services_holding_the_token_dump_no_core() {
        for (unit, text) in [
            (
                "freezeframe-agent.service",
                include_str!("../../../../../packaging/systemd/freezeframe-agent.service"),
            ),
            (
                "freezeframe-drill.service",
                include_str!("../../../../../packaging/systemd/freezeframe-drill.service"),
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
