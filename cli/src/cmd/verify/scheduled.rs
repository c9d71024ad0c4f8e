//! `freezeframe verify --scheduled`: the restore drill a Droplet runs on itself after its
//! timer's snapshot (`freezeframe-drill.service`, started when the snapshot service succeeds),
//! at most once per the agent's `verify.schedule`, with the token of `verify.token_file`: a
//! token of its own, not the agent's. Off unless configured, since that token can create and
//! destroy every Droplet and volume of the account (docs/src/restore-drills.md, "Scheduled drills").

use super::drill::{self, DrillOptions, DrillReport};
use crate::agent::{Exit, Failure};
use crate::api::{self, Access};
use freezeframe_agent::config::{ConfigSources, DigitalOceanSettings, ProviderSettings, Settings};
use freezeframe_agent::secret::read_private_file;
use freezeframe_agent::LastDrill;
use freezeframe_digitalocean::{droplet_id_from_metadata, http_client, Client};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The bound on one scheduled drill, as `freezeframe verify`'s default `--timeout`.
const DRILL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// What `--scheduled` did.
#[derive(Debug)]
pub(crate) enum Scheduled {
    /// `verify.schedule` is off.
    Off,
    /// The last drill is recent enough.
    NotDue {
        /// It.
        last: LastDrill,
        /// When the next one is due, in seconds since the Unix epoch.
        due_unix_seconds: u64,
    },
    /// A drill ran: its exit code and report.
    Ran(Exit, Box<DrillReport>),
}

/// Runs the scheduled drill if it is due, from the agent's configuration (`config`, or the
/// system's); `ssh_command` is the CLI's, to which the configured identity is added.
pub(crate) async fn run(config: Option<&Path>, ssh_command: &str) -> Result<Scheduled, Failure> {
    let sources = config.map_or_else(ConfigSources::system, ConfigSources::explicit);
    let settings = sources
        .load()
        .map_err(|e| Failure::new(Exit::Usage, format!("the agent's configuration: {e}")))?;
    let Some(every) = settings.verify.schedule else {
        return Ok(Scheduled::Off);
    };
    let ProviderSettings::DigitalOcean(ocean) = &settings.snapshot.provider else {
        return Err(Failure::new(
            Exit::Usage,
            "verify.schedule is set, but drills restore DigitalOcean snapshots and \
             snapshot.provider is local-image: set verify.schedule = \"off\"",
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Some(last) = LastDrill::load(&settings.verify.state_file) {
        let due_unix_seconds = last.unix_seconds.saturating_add(every.as_secs());
        if now < due_unix_seconds {
            return Ok(Scheduled::NotDue {
                last,
                due_unix_seconds,
            });
        }
    }
    let (client, options) = prepare(&settings, ocean, ssh_command).await?;
    let (exit, report) = drill::run(&client, &options).await?;
    // A drill that reached a verdict counts; one the API or ssh cut short is tried again after
    // the next snapshot.
    if report.verification.is_some() {
        record(
            &settings,
            LastDrill {
                unix_seconds: now,
                snapshot: report.snapshot_name.clone(),
                verified: report.verified,
            },
        )
        .await?;
    }
    Ok(Scheduled::Ran(exit, Box::new(report)))
}

/// The drill's client and options: its token and ssh key checked, and this Droplet's newest
/// snapshot chosen.
async fn prepare(
    settings: &Settings,
    ocean: &DigitalOceanSettings,
    ssh_command: &str,
) -> Result<(Client, DrillOptions), Failure> {
    let verify = &settings.verify;
    let access = Access {
        why: "the drill's token",
        ..drill::ACCESS
    };
    let client = api::from_file(&ocean.api_url, &verify.token_file, "verify.token_file", &access)?;
    // ssh refuses a key others can read, less plainly.
    read_private_file(&verify.ssh_identity).map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!(
                "the drill's ssh key (verify.ssh_identity): {e}; its public half must be in this \
                 Droplet's /root/.ssh/authorized_keys, which the restored copy keeps"
            ),
        )
    })?;
    let droplet = match ocean.droplet_id {
        Some(id) => id,
        None => {
            let http = http_client(&ocean.api_url)
                .map_err(|e| Failure::new(Exit::Failed, format!("cannot set up HTTPS: {e}")))?;
            droplet_id_from_metadata(&http, &ocean.metadata_url, ocean.api_timeout)
                .await
                .map_err(|e| Failure::new(Exit::Failed, format!("cannot tell which Droplet this is: {e}")))?
        }
    };
    let newest = client
        .snapshots("droplet")
        .await
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot list the Droplet snapshots: {e}")))?
        .into_iter()
        .filter(|s| s.resource_id == droplet.to_string())
        .max_by(|a, b| a.created_at.cmp(&b.created_at))
        .ok_or_else(|| {
            Failure::new(
                Exit::Failed,
                format!("Droplet {droplet} has no snapshot to drill yet"),
            )
        })?;
    let options = DrillOptions {
        snapshot: newest.id,
        size: verify.size.clone(),
        ssh_keys: Vec::new(),
        yes: true,
        timeout: DRILL_TIMEOUT,
        user: "root".into(),
        ssh_command: format!("{ssh_command} -i {}", verify.ssh_identity.display()),
        poll: Duration::from_secs(2),
    };
    Ok((client, options))
}

/// Records `last` (atomically, flushed: off the async workers) and publishes the metrics,
/// which carry the last drill.
async fn record(settings: &Settings, last: LastDrill) -> Result<(), Failure> {
    let state_file = settings.verify.state_file.clone();
    let shown = state_file.display().to_string();
    crate::blocking::run(move || last.store(&state_file))
        .await
        .map_err(|e| Failure::new(Exit::Failed, format!("cannot record the drill in {shown}: {e}")))?;
    freezeframe_agent::publish_metrics(settings).await;
    Ok(())
}

/// What `--scheduled` did, as text.
pub(crate) fn text(done: &Scheduled) -> String {
    let at = |unix: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix));
    match done {
        Scheduled::Off => "scheduled restore drills are off (verify.schedule in the agent's \
                           configuration)\n"
            .into(),
        Scheduled::NotDue {
            last,
            due_unix_seconds,
        } => format!(
            "no drill due: the last, of snapshot {}, ran at {} and {}; the next is due after {}\n",
            last.snapshot,
            at(last.unix_seconds),
            if last.verified { "verified it" } else { "FAILED" },
            at(*due_unix_seconds)
        ),
        Scheduled::Ran(_, report) => drill::text(report),
    }
}

/// What `--scheduled` did, for `--json`.
pub(crate) fn json(done: &Scheduled) -> serde_json::Value {
    match done {
        Scheduled::Off => serde_json::json!({ "scheduled": "off" }),
        Scheduled::NotDue {
            last,
            due_unix_seconds,
        } => serde_json::json!({
            "scheduled": "not-due",
            "last": last,
            "due_unix_seconds": due_unix_seconds,
        }),
        Scheduled::Ran(_, report) => {
            let mut value = serde_json::to_value(report).unwrap_or_default();
            value["scheduled"] = "ran".into();
            value
        }
    }
}
