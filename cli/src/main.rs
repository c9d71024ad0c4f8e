//! `freezeframe`: the command-line client. Drives the agent's D-Bus API on this machine, on a
//! bus by address, or on other machines over SSH; `thaw` works without an agent. This file parses
//! the arguments and starts the runtime; `route` takes the command on.

use freezeframe::agent::Exit;
use freezeframe::args::Command;
use freezeframe::cmd;
use freezeframe::output::{fail, fail_as};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = freezeframe::args::parse();
    // The token goes to this address: never in the clear across the network.
    if let Err(problem) = freezeframe_agent::config::check_api_url(&cli.api_url) {
        let exit = fail_as(cli.json, &format!("--api-url: {problem}"), Exit::Usage);
        return ExitCode::from(exit as u8);
    }
    // Before any command, those this process answers itself (completions, man) included.
    if let Err(message) = freezeframe::route::check_combination(&cli) {
        return ExitCode::from(fail_as(cli.json, &message, Exit::Usage) as u8);
    }
    let exit = match &cli.command {
        Command::Completions { shell } => {
            cmd::completions::write(*shell);
            Exit::Success
        }
        Command::Man { dir } => match cmd::man::write(dir) {
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
            Ok(runtime) => runtime.block_on(freezeframe::route::run(&cli)),
            Err(e) => fail(&format!("cannot start the async runtime: {e}"), Exit::Failed),
        },
    };
    ExitCode::from(exit as u8)
}
