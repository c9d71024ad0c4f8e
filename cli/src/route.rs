//! Where a parsed command goes: to the DigitalOcean API's commands (`verify`, `recover`,
//! `snapshot --offline`), to a group of agents (`snapshot --group`, `prune --keep-groups`), to
//! [`fleet`](crate::fleet) for several machines, or through [`cmd::one`] to one machine.

use crate::agent::{Exit, Failure};
use crate::args::{machines, Cli, Command, Machines};
use crate::client::Target;
use crate::cmd::{self, Ended};
use crate::output::{fail_at, print};
use crate::progress::{self, Progress};

/// The machines a command addresses.
async fn targets(cli: &Cli) -> Result<Vec<Target>, Failure> {
    let mut targets: Vec<Target> = cli
        .hosts
        .iter()
        .map(|host| Target::Remote {
            host: host.clone(),
            ssh_command: cli.ssh_command.clone(),
        })
        .collect();
    if let Some(tag) = &cli.tag {
        let hosts = crate::api::tagged(&cli.api_url, tag).await?;
        targets.extend(hosts.into_iter().map(|host| Target::Remote {
            host,
            ssh_command: cli.ssh_command.clone(),
        }));
        if targets.is_empty() {
            return Err(Failure::new(
                Exit::Usage,
                format!("no Droplet has the tag `{tag}` (or none of them has a public IPv4 address)"),
            ));
        }
    }
    if targets.is_empty() {
        targets.push(match &cli.bus_address {
            Some(address) => Target::Bus(address.clone()),
            None => Target::Local,
        });
    }
    Ok(targets)
}

/// The commands that go through the agent or the API: run, then printed in one place
/// ([`finish`]), so every path, a failure too, prints its one JSON document with `--json`.
pub async fn run(cli: &Cli) -> Exit {
    finish(cli.json, dispatch(cli).await)
}

/// Prints how a command ended: its result (one JSON document with `--json`, else its text),
/// nothing more for results printed machine by machine as they came, or its failure (on
/// stderr, and with `--json` as the one document on stdout). Its exit.
pub fn finish(json: bool, ended: Result<Ended, Failure>) -> Exit {
    match ended {
        Ok(Ended::Done(done)) => {
            print(json, &done.value, &done.text);
            done.exit
        }
        Ok(Ended::Streamed(exit)) => exit,
        Err(f) => fail_at(json, &f.message, f.exit, f.step),
    }
}

/// The command, its options already checked together (`main`, [`check_combination`]).
async fn dispatch(cli: &Cli) -> Result<Ended, Failure> {
    match &cli.command {
        Command::Verify { .. } => return cmd::verify::run(cli).await,
        Command::Recover => return cmd::recover::run(cli).await.map(Ended::Done),
        Command::Snapshot { offline: true, .. } => return cmd::offline::run(cli).await,
        _ => {}
    }
    let targets = targets(cli).await?;
    match &cli.command {
        Command::Snapshot { group: true, .. } => {
            return Ok(Ended::Done(cmd::group::run(cli, &targets).await))
        }
        Command::Prune {
            keep_groups: Some(keep),
            dry_run,
            ..
        } => {
            return cmd::group::prune_groups(cli, &targets, *keep, *dry_run)
                .await
                .map(Ended::Done)
        }
        _ => {}
    }
    if targets.len() > 1 || cli.tag.is_some() {
        return Ok(Ended::Streamed(crate::fleet::run(cli, &targets).await));
    }
    if let Command::Doctor = cli.command {
        return Ok(Ended::Done(cmd::doctor::run(&targets[0]).await));
    }
    let mut shown: Box<dyn Progress> = match cli.command {
        Command::Snapshot { .. } => progress::for_one(cli.json),
        _ => Box::new(progress::Silent),
    };
    cmd::one(&cli.command, &targets[0], shown.as_mut())
        .await
        .map(Ended::Done)
}

/// Why `name` takes no -H, --tag or --bus-address.
fn no_machines(name: &str) -> String {
    match name {
        "recover" => {
            "recover finds the Droplets to power on by itself: give it no -H, --tag or --bus-address".into()
        }
        "verify" => "verify restores a snapshot on a Droplet of its own through the DigitalOcean API, not \
                     on a machine you name: leave out -H, --tag and --bus-address"
            .into(),
        _ => {
            format!("{name} runs on this machine and reaches no agent: leave out -H, --tag and --bus-address")
        }
    }
}

/// Options that make no sense together, refused before anything is reached: among them more
/// machines than the command takes ([`machines`]).
pub fn check_combination(cli: &Cli) -> Result<(), String> {
    if let Command::List { group: Some(id) } = &cli.command {
        if !freezeframe_agent::is_group_id(id) {
            return Err(format!(
                "--group {id}: a group's id is g and 8 lowercase hexadecimal digits, as in its snapshots' names"
            ));
        }
    }
    let name = cli.command.name();
    let several = cli.hosts.len() > 1 || cli.tag.is_some();
    let any = !cli.hosts.is_empty() || cli.tag.is_some() || cli.bus_address.is_some();
    match machines(name) {
        Machines::Many => {}
        Machines::One if several => {
            return Err(format!(
                "{name} checks one machine at a time: give one -H HOST (or none for this machine)"
            ))
        }
        Machines::One => {}
        Machines::None if any => return Err(no_machines(name)),
        Machines::None => {}
    }
    if let Command::Thaw {
        runtime_dir: Some(dir),
    } = &cli.command
    {
        if !cli.hosts.is_empty() || cli.tag.is_some() || cli.bus_address.is_some() {
            return Err(format!(
                "--runtime-dir {} names a directory on this machine, for a thaw without an agent; \
                 with -H, --tag or --bus-address the agent there uses its own: leave it out",
                dir.display()
            ));
        }
    }
    Ok(())
}
