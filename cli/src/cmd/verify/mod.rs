//! `freezeframe verify`: a restore drill of a snapshot through the API with the operator's
//! token ([`drill`]), the opt-in drill a Droplet runs on itself after its timer's snapshot
//! (`--scheduled`, [`scheduled`]), or `--cleanup` of what drills left behind.

pub(crate) mod drill;
mod ports;
pub(crate) mod scheduled;

use crate::agent::{Exit, Failure};
use crate::api;
use crate::args::{Cli, Command};
use crate::cmd::{Done, Ended};
use crate::output::json;

/// Runs `freezeframe verify` as the command line asks.
pub(crate) async fn run(cli: &Cli) -> Result<Ended, Failure> {
    let Command::Verify {
        snapshot,
        cleanup,
        scheduled,
        config,
        size,
        ssh_key,
        user,
        yes,
        timeout,
    } = &cli.command
    else {
        unreachable!("called for verify only")
    };
    if *scheduled {
        let done = scheduled::run(config.as_deref(), &cli.ssh_command).await?;
        return Ok(Ended::Done(Done {
            exit: match done {
                scheduled::Scheduled::Ran(exit, _) => exit,
                _ => Exit::Success,
            },
            value: scheduled::json(&done),
            text: scheduled::text(&done),
            line: String::new(),
        }));
    }
    let client = api::from_env(&cli.api_url, &drill::ACCESS)?;
    if *cleanup {
        let left = drill::cleanup(&client, drill::DRILL_TAG).await;
        if !left.is_empty() {
            eprintln!("freezeframe: error: could not destroy: {}", left.join("; "));
        }
        return Ok(Ended::Done(Done {
            exit: if left.is_empty() {
                Exit::Success
            } else {
                Exit::Failed
            },
            value: serde_json::json!({ "left_behind": left }),
            text: if left.is_empty() {
                "nothing a drill created is left\n".into()
            } else {
                String::new()
            },
            line: String::new(),
        }));
    }
    let options = drill::DrillOptions {
        snapshot: snapshot.clone().unwrap_or_default(),
        size: size.clone(),
        ssh_keys: ssh_key.clone(),
        yes: *yes,
        timeout: *timeout,
        user: user.clone(),
        ssh_command: cli.ssh_command.clone(),
        poll: std::time::Duration::from_secs(2),
    };
    let (exit, report) = drill::run(&client, &options).await?;
    Ok(Ended::Done(Done {
        exit,
        value: json(&report),
        text: drill::text(&report),
        line: String::new(),
    }))
}
