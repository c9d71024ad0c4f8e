//! A drill's report for people.

use super::DrillReport;
use freezeframe_contract::verification::{FilesystemHealth, MachineVerification, ProbeVerdict};

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
            "  {} ({}): {}; {}\n",
            fs.mountpoint.display(),
            fs.fstype,
            if fs.markers.is_empty() {
                "no markers".to_string()
            } else {
                fs.markers.join(", ")
            },
            FilesystemHealth::words(fs.health.as_ref())
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
