//! `freezeframe-agent verify --image PATH`: what a snapshot's image proves (see
//! `freezeframe_agent::verify`), as text or JSON; exit 0 only when it is verified.

use super::{Exit, Failure};
use freezeframe_agent::verify::{
    enter_private_mounts, verify_image, DatabaseCheck, ImageVerification, JournalState, ProbeVerdict,
};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The image (or block device) of one filesystem from a snapshot; never written to
    #[arg(long, value_name = "PATH")]
    image: PathBuf,
    /// Print the findings as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(args: &VerifyArgs) -> Result<Exit, Failure> {
    // First, while this process has one thread: nothing verify mounts is seen outside it, and
    // all of it goes when it ends, however it ends.
    enter_private_mounts()?;
    let scratch = tempfile::Builder::new()
        .prefix("freezeframe-verify-")
        .tempdir()
        .map_err(Failure::failed)?;
    let found = verify_image(&args.image, scratch.path())?;
    if args.json {
        freezeframe_agent::stdout::line(&serde_json::to_string_pretty(&found)?);
    } else {
        freezeframe_agent::stdout::write(text(&found).as_bytes());
    }
    Ok(if found.verified {
        Exit::Success
    } else {
        Exit::Failed
    })
}

fn text(found: &ImageVerification) -> String {
    let mut out = format!(
        "{} ({}): {}\n",
        found.image.display(),
        found.fstype,
        if found.verified {
            "VERIFIED"
        } else {
            "NOT verified"
        }
    );
    let probe = match found.probe {
        ProbeVerdict::InsideWindow => "read inside the frozen window",
        ProbeVerdict::AfterThaw => "read AFTER the thaw",
        ProbeVerdict::NoMarkers => "no markers",
    };
    out.push_str(&format!("  probe: {probe} ({})\n", found.markers.join(", ")));
    let journal = match found.journal {
        JournalState::Clean => "clean",
        JournalState::NeedsRecovery => "needs recovery (read while live)",
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
    for reason in &found.reasons {
        out.push_str(&format!("  why not: {reason}\n"));
    }
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
