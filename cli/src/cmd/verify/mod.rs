//! `freezeframe verify`: a restore drill of a snapshot through the API with the operator's
//! token ([`drill`]), the opt-in drill a Droplet runs on itself after its timer's snapshot
//! (`--scheduled`, [`scheduled`]), or `--cleanup` of what drills left behind.

pub(crate) mod drill;
mod ports;
pub(crate) mod scheduled;

use crate::agent::Exit;
use crate::api;
use crate::args::{Cli, Command};
use crate::output::{fail, fail_as, print};

/// Runs `freezeframe verify` as the command line asks.
pub(crate) async fn run(cli: &Cli) -> Exit {
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
        return match scheduled::run(config.as_deref(), &cli.ssh_command).await {
            Ok(done) => {
                print(cli.json, &scheduled::json(&done), &scheduled::text(&done));
                match done {
                    scheduled::Scheduled::Ran(exit, _) => exit,
                    _ => Exit::Success,
                }
            }
            Err(f) => fail_as(cli.json, &f.message, f.exit),
        };
    }
    let client = match api::from_env(&cli.api_url, &drill::ACCESS) {
        Ok(client) => client,
        Err(f) => return fail_as(cli.json, &f.message, f.exit),
    };
    if *cleanup {
        let left = drill::cleanup(&client, drill::DRILL_TAG).await;
        if cli.json {
            crate::outln!("{}", serde_json::json!({ "left_behind": left }));
        } else if left.is_empty() {
            crate::outln!("nothing a drill created is left");
        }
        if left.is_empty() {
            return Exit::Success;
        }
        return fail(&format!("could not destroy: {}", left.join("; ")), Exit::Failed);
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
    match drill::run(&client, &options).await {
        Ok((exit, report)) => {
            print(cli.json, &report, &drill::text(&report));
            exit
        }
        Err(f) => fail_as(cli.json, &f.message, f.exit),
    }
}
