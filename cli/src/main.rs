//! `freezeframe`: the command-line client. Drives the agent's D-Bus API on this machine, on a
//! bus by address, or on other machines over SSH; `thaw` works without an agent.

use clap::{CommandFactory, Parser};
use freezeframe::args::{Cli, Command};
use freezeframe::client::Target;
use freezeframe::commands::{self, Exit, SnapshotRequest};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The token goes to this address: never in the clear across the network.
    if let Err(problem) = freezeframe_agent::config::check_api_url(&cli.api_url) {
        let exit = fail_as(&cli, &format!("--api-url: {problem}"), Exit::Usage);
        return ExitCode::from(exit as u8);
    }
    let exit = match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "freezeframe", &mut script);
            freezeframe_agent::stdout::write(&script);
            Exit::Success
        }
        Command::Man { dir } => match man_pages(dir) {
            Ok(()) => Exit::Success,
            Err(e) => fail(
                &format!("cannot write man pages into {}: {e}", dir.display()),
                Exit::Failed,
            ),
        },
        _ => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(remote(&cli)),
            Err(e) => fail(&format!("cannot start the async runtime: {e}"), Exit::Failed),
        },
    };
    ExitCode::from(exit as u8)
}

fn fail(message: &str, exit: Exit) -> Exit {
    eprintln!("freezeframe: error: {message}");
    exit
}

/// A failure, said on stderr and, with --json, as the one JSON document on stdout too, so a
/// script reading stdout always gets one.
fn fail_as(cli: &Cli, message: &str, exit: Exit) -> Exit {
    fail_at(cli, message, exit, None)
}

/// [`fail_as`] for a failure at a known step (`ssh`, `agent`, …), which --json names.
fn fail_at(cli: &Cli, message: &str, exit: Exit, step: Option<&str>) -> Exit {
    if cli.json {
        let mut document = serde_json::json!({ "error": message, "exit": exit as u8 });
        if let Some(step) = step {
            document["step"] = step.into();
        }
        freezeframe::outln!("{document}");
    }
    fail(message, exit)
}

/// The machines a command addresses.
async fn targets(cli: &Cli) -> Result<Vec<Target>, commands::Failure> {
    let mut targets: Vec<Target> = cli
        .hosts
        .iter()
        .map(|host| Target::Remote {
            host: host.clone(),
            ssh_command: cli.ssh_command.clone(),
        })
        .collect();
    if let Some(tag) = &cli.tag {
        let hosts = freezeframe::fleet::tagged(&cli.api_url, tag).await?;
        targets.extend(hosts.into_iter().map(|host| Target::Remote {
            host,
            ssh_command: cli.ssh_command.clone(),
        }));
        if targets.is_empty() {
            return Err(commands::Failure::new(
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

/// The commands that go through the agent.
async fn remote(cli: &Cli) -> Exit {
    if let Err(message) = check_combination(cli) {
        return fail_as(cli, &message, Exit::Usage);
    }
    if let Command::Verify { .. } = cli.command {
        return drill(cli).await;
    }
    if let Command::Recover = cli.command {
        return freezeframe::offline::recover_all(cli).await;
    }
    if let Command::Snapshot {
        offline: true,
        droplets,
        name,
        shutdown_timeout,
        force_power_off,
        boot_timeout,
        power_on_deadline,
        dry_run,
        ..
    } = &cli.command
    {
        let request = freezeframe::offline::OfflineRequest {
            name: name.clone(),
            shutdown_timeout: *shutdown_timeout,
            force_power_off: *force_power_off,
            boot_timeout: *boot_timeout,
            power_on_deadline: *power_on_deadline,
            dry_run: *dry_run,
        };
        return freezeframe::offline::run(cli, droplets, &request).await;
    }
    let targets = match targets(cli).await {
        Ok(t) => t,
        Err(f) => return fail_as(cli, &f.message, f.exit),
    };
    match &cli.command {
        Command::Snapshot {
            group: true,
            wait,
            prepare_timeout,
            max_freeze,
            ..
        } => {
            let request = freezeframe::group::GroupRequest {
                wait: *wait,
                prepare_timeout: *prepare_timeout,
                max_freeze: *max_freeze,
            };
            return freezeframe::group::run(cli, &targets, &request).await;
        }
        Command::Prune {
            keep_groups: Some(keep),
            ..
        } => return freezeframe::group::prune_groups(cli, &targets, *keep).await,
        _ => {}
    }
    if targets.len() > 1 || cli.tag.is_some() {
        return freezeframe::fleet::run(cli, &targets).await;
    }
    if let Command::Doctor = cli.command {
        return freezeframe::doctor::run(&targets[0]).await;
    }
    match one_machine(cli, &targets[0]).await {
        Ok((exit, value, text)) => {
            if cli.json {
                freezeframe::outln!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            } else {
                freezeframe_agent::stdout::write(text.as_bytes());
            }
            exit
        }
        Err(f) => fail_at(cli, &f.message, f.exit, f.step),
    }
}

/// Options that make no sense together, refused before anything is reached.
fn check_combination(cli: &Cli) -> Result<(), String> {
    if let Command::List { group: Some(id) } = &cli.command {
        if !freezeframe_agent::is_group_id(id) {
            return Err(format!(
                "--group {id}: a group's id is g and 8 lowercase hexadecimal digits, as in its snapshots' names"
            ));
        }
    }
    if matches!(cli.command, Command::Recover)
        && (!cli.hosts.is_empty() || cli.tag.is_some() || cli.bus_address.is_some())
    {
        return Err(
            "recover finds the Droplets to power on by itself: give it no -H, --tag or --bus-address".into(),
        );
    }
    if matches!(cli.command, Command::Doctor) && (cli.hosts.len() > 1 || cli.tag.is_some()) {
        return Err(
            "doctor checks one machine at a time: give one -H HOST (or none for this machine)".into(),
        );
    }
    if matches!(cli.command, Command::Verify { .. })
        && (!cli.hosts.is_empty() || cli.tag.is_some() || cli.bus_address.is_some())
    {
        return Err(
            "verify restores a snapshot on a Droplet of its own through the DigitalOcean API, not \
             on a machine you name: leave out -H, --tag and --bus-address"
                .into(),
        );
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

/// The command against one machine: its exit, its result as JSON, and as text.
async fn one_machine(
    cli: &Cli,
    target: &Target,
) -> Result<(Exit, serde_json::Value, String), commands::Failure> {
    match &cli.command {
        Command::Snapshot {
            name, wait, dry_run, ..
        } => {
            let request = SnapshotRequest {
                name: name.clone(),
                wait: *wait,
                dry_run: *dry_run,
            };
            let mut progress: Box<dyn commands::Progress> = if cli.json {
                Box::new(commands::Silent)
            } else if std::io::stderr().is_terminal() {
                Box::new(commands::Spinner::new("snapshot"))
            } else {
                Box::new(commands::Lines::default())
            };
            commands::snapshot(target, &request, progress.as_mut())
                .await
                .map(|finished| (finished.exit(), finished.to_json(), finished.text()))
        }
        Command::Plan => commands::plan(target).await.map(|plan| {
            (
                Exit::Success,
                json(&plan),
                freezeframe_contract::render::plan(&plan),
            )
        }),
        Command::Status => commands::status(target)
            .await
            .map(|status| (Exit::Success, json(&status), commands::status_text(&status))),
        Command::List { group } => commands::list(target).await.map(|mut list| {
            list.retain(|s| group.is_none() || s.group == *group);
            (Exit::Success, json(&list), commands::snapshots_text(&list))
        }),
        // --keep-groups went to group retention before: here --keep is given.
        Command::Prune { keep, .. } => commands::prune(target, keep.unwrap_or(1))
            .await
            .map(|pruned| (Exit::Success, json(&pruned), commands::pruned_text(&pruned))),
        Command::Thaw { runtime_dir } => {
            thaw(target, runtime_dir.as_deref())
                .await
                .map(|(recovered, place)| {
                    let exit = if recovered.failed() {
                        Exit::Failed
                    } else {
                        Exit::Success
                    };
                    (exit, json(&recovered), recovered.text(&place))
                })
        }
        Command::Doctor
        | Command::Verify { .. }
        | Command::Recover
        | Command::Completions { .. }
        | Command::Man { .. } => {
            unreachable!("handled before")
        }
    }
}

/// `freezeframe verify`: a restore drill, or `--cleanup` of what drills left behind.
async fn drill(cli: &Cli) -> Exit {
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
        return match freezeframe::scheduled::run(config.as_deref(), &cli.ssh_command).await {
            Ok(done) => {
                if cli.json {
                    freezeframe::outln!(
                        "{}",
                        serde_json::to_string_pretty(&freezeframe::scheduled::json(&done))
                            .unwrap_or_default()
                    );
                } else {
                    freezeframe_agent::stdout::write(freezeframe::scheduled::text(&done).as_bytes());
                }
                match done {
                    freezeframe::scheduled::Scheduled::Ran(exit, _) => exit,
                    _ => Exit::Success,
                }
            }
            Err(f) => fail_as(cli, &f.message, f.exit),
        };
    }
    let client = match freezeframe::drill::client(&cli.api_url) {
        Ok(client) => client,
        Err(f) => return fail_as(cli, &f.message, f.exit),
    };
    if *cleanup {
        let left = freezeframe::drill::cleanup(&client, freezeframe::drill::DRILL_TAG).await;
        if cli.json {
            freezeframe::outln!("{}", serde_json::json!({ "left_behind": left }));
        } else if left.is_empty() {
            freezeframe::outln!("nothing a drill created is left");
        }
        if left.is_empty() {
            return Exit::Success;
        }
        return fail(&format!("could not destroy: {}", left.join("; ")), Exit::Failed);
    }
    let options = freezeframe::drill::DrillOptions {
        snapshot: snapshot.clone().unwrap_or_default(),
        size: size.clone(),
        ssh_keys: ssh_key.clone(),
        yes: *yes,
        timeout: *timeout,
        user: user.clone(),
        ssh_command: cli.ssh_command.clone(),
        poll: std::time::Duration::from_secs(2),
    };
    match freezeframe::drill::run(&client, &options).await {
        Ok((exit, report)) => {
            if cli.json {
                freezeframe::outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                freezeframe_agent::stdout::write(freezeframe::drill::text(&report).as_bytes());
            }
            exit
        }
        Err(f) => fail_as(cli, &f.message, f.exit),
    }
}

fn json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Thaws through the target's agent; on this machine, directly from the runtime directory when
/// no agent answers (the emergency case: an agent that cannot start). Returns what was done and
/// where.
async fn thaw(
    target: &Target,
    runtime_dir: Option<&std::path::Path>,
) -> Result<(freezeframe_contract::Recovered, String), commands::Failure> {
    let through_agent = commands::thaw(target).await;
    match (through_agent, target) {
        (Ok(recovered), _) => Ok((recovered, target.to_string())),
        (Err(f), Target::Local) if f.exit == Exit::Unreachable => {
            let dir = runtime_dir.unwrap_or(std::path::Path::new(
                freezeframe_agent::config::DEFAULT_RUNTIME_DIR,
            ));
            eprintln!(
                "freezeframe: {}; thawing from {} directly",
                f.message,
                dir.display()
            );
            let recovered = commands::thaw_here(dir).await?;
            Ok((recovered, dir.display().to_string()))
        }
        (Err(f), _) => Err(f),
    }
}

/// freezeframe.1 and one page per subcommand (freezeframe-snapshot.1, …), each with the
/// global options and the sections clap does not write: EXIT STATUS, ENVIRONMENT, FILES,
/// EXAMPLES, SEE ALSO.
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    // Propagates the global options (-H, --json, --bus-address, …) into each subcommand's page.
    command.build();
    let mut pages = vec![("freezeframe".to_string(), command.clone(), None)];
    for sub in command.get_subcommands() {
        let name = format!("freezeframe-{}", sub.get_name());
        pages.push((
            name.clone(),
            sub.clone().name(name.clone()),
            Some(sub.get_name().to_string()),
        ));
    }
    for (name, page, sub) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        out.extend_from_slice(freezeframe::man::extra_sections(sub.as_deref()).as_bytes());
        std::fs::write(dir.join(format!("{name}.1")), out)?;
    }
    Ok(())
}
