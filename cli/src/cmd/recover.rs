//! `freezeframe recover`: powers on the Droplets killed offline runs left off (recorded under the
//! user's state directory, or tagged `freezeframe-offline-pending`), and says what it did.

use super::offline::{self, said, setup};
use crate::agent::Exit;
use crate::args::Cli;

/// `recover`: powers on what killed offline runs left off, and says what it did.
pub(crate) async fn run(cli: &Cli) -> Exit {
    let (client, pending) = match setup(&cli.api_url) {
        Ok(both) => both,
        Err(f) => return said(f),
    };
    let reports = offline::recover(&client, &pending).await;
    if reports.is_empty() && !cli.json {
        crate::outln!("nothing to recover: no offline run left a Droplet waiting for its power-on");
    }
    let mut exit = Exit::Success;
    for report in &reports {
        if !report.succeeded {
            exit = Exit::Failed;
        }
        if cli.json {
            crate::outln!("{}", serde_json::to_string(report).unwrap_or_default());
        } else {
            match &report.error {
                None if !report.running => {
                    crate::outln!("Droplet {}: {}", report.droplet_id, report.warnings.join("; "))
                }
                None => crate::outln!("Droplet {}: running again", report.droplet_id),
                Some(e) => crate::outln!("Droplet {}: FAILED: {e}", report.droplet_id),
            }
        }
    }
    exit
}
