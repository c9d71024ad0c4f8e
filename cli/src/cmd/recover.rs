//! `freezeframe recover`: powers on the Droplets killed offline runs left off (recorded under the
//! user's state directory, or tagged `freezeframe-offline-pending`), and says what it did: one
//! JSON document with `--json`, `{"droplets": […]}`, also when there was nothing to recover.

use super::offline::{self, setup};
use super::Done;
use crate::agent::{Exit, Failure};
use crate::args::Cli;

/// `recover`: powers on what killed offline runs left off; what it did.
pub(crate) async fn run(cli: &Cli) -> Result<Done, Failure> {
    let (client, pending) = setup(&cli.api_url)?;
    let reports = offline::recover(&client, &pending).await?;
    let mut exit = Exit::Success;
    let mut text = String::new();
    if reports.is_empty() {
        text.push_str("nothing to recover: no offline run left a Droplet waiting for its power-on\n");
    }
    for report in &reports {
        exit = exit.max(report.exit);
        text.push_str(&match &report.error {
            // Nothing to power on (a Droplet that no longer exists): what was done instead.
            None if !report.running => {
                format!("Droplet {}: {}\n", report.droplet_id, report.warnings.join("; "))
            }
            None => format!("Droplet {}: running again\n", report.droplet_id),
            Some(e) => format!("Droplet {}: FAILED: {e}\n", report.droplet_id),
        });
    }
    Ok(Done {
        exit,
        value: serde_json::json!({ "droplets": reports }),
        line: format!("{} Droplets recovered", reports.len()),
        text,
    })
}
