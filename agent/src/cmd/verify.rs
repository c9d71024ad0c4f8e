//! `freezeframe-agent verify`: what a snapshot proves (see `crate::verify`), from
//! its image (`--image PATH`) or on a machine restored from it (the restore drill runs this
//! there, with `--volume` for each restored volume), as text or JSON; exit 0 only when it is
//! verified.

use super::{Exit, Failure};
use crate::config::{ProviderSettings, Settings, DEFAULT_VOLUME_LINKS};
use crate::verify::{
    enter_private_mounts, verify_any, verify_machine, DatabaseCheck, DiskVerification, FilesystemHealth,
    Findings, ImageVerification, JournalState, MachineVerification, ProbeVerdict,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The image (or block device) of a filesystem from a snapshot, or of a whole disk whose
    /// partitions hold them; never written to. Without it: this machine, restored from a
    /// snapshot
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// A volume restored from the snapshot's run and attached here (not mounted), by name:
    /// checked as an image, read-only. Repeat for each
    #[arg(long, value_name = "NAME", conflicts_with = "image")]
    volume: Vec<String>,
    /// How long each database this machine runs may take to come up (its boot may still be
    /// recovering it)
    #[arg(long, value_name = "DURATION", default_value = "15m", conflicts_with = "image",
          value_parser = crate::config::duration)]
    wait: std::time::Duration,
    /// Print the findings as JSON
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(config: Option<&Path>, args: &VerifyArgs) -> Result<Exit, Failure> {
    // The machine's settings first: a bad one is a usage error, before anything is mounted.
    let settings = match &args.image {
        Some(_) => None,
        None => Some(super::load_settings(config)?),
    };
    // Then, while this process has one thread: nothing verify mounts is seen outside it, and
    // all of it goes when it ends, however it ends.
    enter_private_mounts()?;
    let scratch = tempfile::Builder::new()
        .prefix("freezeframe-verify-")
        .tempdir()
        .map_err(Failure::failed)?;
    match (&args.image, settings) {
        (Some(image), _) => {
            let found = verify_any(image, scratch.path())?;
            Ok(show(&found, found.verified(), args.json, findings_text))
        }
        (None, settings) => {
            let settings = settings.expect("loaded when no image is given");
            let found = verify_machine(
                settings.freeze.mountpoints.as_deref(),
                &settings.quiesce.quiescers,
                &volume_devices(&settings, &args.volume),
                args.wait,
                scratch.path(),
            )?;
            Ok(show(&found, found.verified, args.json, machine_text))
        }
    }
}

/// Prints the findings; exit 0 only when verified.
fn show<T: Serialize>(found: &T, verified: bool, json: bool, text: fn(&T) -> String) -> Exit {
    if json {
        match serde_json::to_string_pretty(found) {
            Ok(line) => crate::stdout::line(&line),
            Err(e) => eprintln!("freezeframe-agent: error: {e}"),
        }
    } else {
        crate::stdout::write(text(found).as_bytes());
    }
    if verified {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// Each restored volume's device: its udev link by name.
fn volume_devices(settings: &Settings, names: &[String]) -> Vec<(String, PathBuf)> {
    let links = match &settings.snapshot.provider {
        ProviderSettings::DigitalOcean(d) => d.volume_links.clone(),
        ProviderSettings::LocalImage { .. } => PathBuf::from(DEFAULT_VOLUME_LINKS),
    };
    names
        .iter()
        .map(|name| (name.clone(), links.join(format!("scsi-0DO_Volume_{name}"))))
        .collect()
}

fn machine_text(found: &MachineVerification) -> String {
    let mut out = format!(
        "this machine: {}\n  probe: {}\n",
        verdict(found.verified),
        probe_words(found.probe)
    );
    for fs in &found.filesystems {
        let markers = if fs.markers.is_empty() {
            "no markers".to_string()
        } else {
            fs.markers.join(", ")
        };
        out.push_str(&format!(
            "  {} ({}): {markers}; {}\n",
            fs.mountpoint.display(),
            fs.fstype,
            FilesystemHealth::words(fs.health.as_ref())
        ));
    }
    for database in &found.databases {
        out.push_str(&database_text(database));
    }
    for volume in &found.volumes {
        out.push_str(&format!("volume {}:\n", volume.name));
        out.push_str(&findings_text(&volume.found));
    }
    out.push_str(&why_not(&found.reasons));
    out
}

fn verdict(verified: bool) -> &'static str {
    if verified {
        "VERIFIED"
    } else {
        "NOT verified"
    }
}

/// What kept a verification from passing, one line each.
fn why_not(reasons: &[String]) -> String {
    reasons.iter().map(|r| format!("  why not: {r}\n")).collect()
}

fn probe_words(probe: ProbeVerdict) -> &'static str {
    match probe {
        ProbeVerdict::InsideWindow => "read inside the frozen window",
        ProbeVerdict::AfterThaw => "read AFTER the thaw",
        ProbeVerdict::NoMarkers => "no markers",
    }
}

fn findings_text(found: &Findings) -> String {
    match found {
        Findings::Disk(disk) => disk_text(disk),
        Findings::Filesystem(filesystem) => text(filesystem),
    }
}

fn disk_text(found: &DiskVerification) -> String {
    let mut out = format!(
        "{} ({} partition table): {}\n  probe: {}\n",
        found.image.display(),
        found.partition_table,
        verdict(found.verified),
        probe_words(found.probe)
    );
    for partition in &found.partitions {
        match &partition.found {
            Some(checked) => {
                out.push_str(&format!("partition {}: ", partition.number));
                out.push_str(&text(checked));
            }
            None => out.push_str(&format!(
                "partition {}: {}, not checked\n",
                partition.number,
                if partition.fstype.is_empty() {
                    "no filesystem verify knows"
                } else {
                    &partition.fstype
                }
            )),
        }
    }
    out.push_str(&why_not(&found.reasons));
    out
}

fn text(found: &ImageVerification) -> String {
    let mut out = format!(
        "{} ({}): {}\n",
        found.image.display(),
        found.fstype,
        verdict(found.verified)
    );
    out.push_str(&format!(
        "  probe: {} ({})\n",
        probe_words(found.probe),
        found.markers.join(", ")
    ));
    let journal = match found.journal {
        JournalState::Clean => "clean",
        JournalState::NeedsRecovery => "needs recovery (read while live)",
        JournalState::Torn => "torn: superblock clean, journal written (read part-way across the thaw)",
        JournalState::NotTold => "tells nothing (an XFS log is covered, not emptied, by a freeze)",
    };
    out.push_str(&format!("  journal: {journal}\n"));
    out.push_str(&format!(
        "  filesystem check: {}\n",
        if found.filesystem_ok { "clean" } else { "FAILED" }
    ));
    for database in &found.databases {
        out.push_str(&database_text(database));
    }
    out.push_str(&why_not(&found.reasons));
    out
}

fn database_text(database: &DatabaseCheck) -> String {
    let mut out = format!(
        "  {} at {}: {}\n",
        database.kind.label(),
        database.path.display(),
        if database.ok {
            "started and checked"
        } else {
            "FAILED"
        }
    );
    if let Some(seconds) = database.recovery_seconds {
        out.push_str(&format!("    recovered in {seconds:.2} s"));
        if let Some(bytes) = database.replayed_bytes {
            out.push_str(&format!(", {bytes} bytes of log replayed"));
        }
        out.push('\n');
    }
    if !database.tables.is_empty() {
        let rows: u64 = database.tables.iter().map(|t| t.rows).sum();
        out.push_str(&format!(
            "    {} tables, {rows} rows read\n",
            database.tables.len()
        ));
    }
    if let Some(keys) = database.keys {
        out.push_str(&format!("    {keys} keys loaded\n"));
    }
    for check in &database.checks {
        out.push_str(&format!("    {check}\n"));
    }
    out
}
