//! `freezeframe`: the command-line client. Drives the agent's D-Bus API on this machine, on a
//! bus by address, or on other machines over SSH; `thaw` works without an agent. This file parses
//! the arguments and starts the runtime; `route` takes the command on and prints how it ended.

use freezeframe::agent::Exit;
use freezeframe::args::{Cli, Command};
use freezeframe::cmd;
use freezeframe::output::{fail_as, json_asked};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match freezeframe::args::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused_arguments(e),
    };
    ExitCode::from(run(&cli).code())
}

fn run(cli: &Cli) -> Exit {
    // The token goes to this address: never in the clear across the network.
    if let Err(problem) = freezeframe_agent::config::check_api_url(&cli.api_url) {
        return fail_as(cli.json, &format!("--api-url: {problem}"), Exit::Usage);
    }
    // Before any command, those this process answers itself (completions, man) included.
    if let Err(message) = freezeframe::route::check_combination(cli) {
        return fail_as(cli.json, &message, Exit::Usage);
    }
    match &cli.command {
        Command::Completions { .. } | Command::Man { .. } if cli.json => fail_as(
            true,
            "completions and man write shell scripts and man pages, not results: leave out --json",
            Exit::Usage,
        ),
        Command::Completions { shell } => {
            cmd::completions::write(*shell);
            Exit::Success
        }
        Command::Man { dir } => match cmd::man::write(dir) {
            Ok(()) => Exit::Success,
            Err(e) => fail_as(
                false,
                &format!("cannot write man pages into {}: {e}", dir.display()),
                Exit::Failed,
            ),
        },
        _ => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(freezeframe::route::run(cli)),
            Err(e) => fail_as(
                cli.json,
                &format!("cannot start the async runtime: {e}"),
                Exit::Failed,
            ),
        },
    }
}

/// Arguments clap refused: its message (and usage) on stderr, exit 2; with `--json` among the
/// arguments, the failure is the one JSON document on stdout too. Help and the version are not
/// failures: clap prints them.
fn refused_arguments(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !json_asked(std::env::args_os().skip(1))
    {
        e.exit()
    }
    let message = e.render().to_string();
    let first = message.lines().next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // clap's own words, usage and all, on stderr; the document names the first line.
    let _ = e.print();
    freezeframe::output::document_only(first, Exit::Usage);
    ExitCode::from(Exit::Usage.code())
}
