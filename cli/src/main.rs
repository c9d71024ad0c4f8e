//! `freezeframe`: the command-line client. For now it carries the `demo` and the emergency
//! `thaw`, which must work without the agent or a bus; the D-Bus commands (snapshot, plan,
//! status, list, prune, doctor) build on the agent service.

use clap::{Parser, Subcommand};
use freezeframe_agent::config::DEFAULT_RUNTIME_DIR;
use freezeframe_agent::guard::record::{self, ThawOutcome};
use std::path::PathBuf;
use std::process::ExitCode;

/// Consistent live snapshots without a shutdown.
#[derive(Debug, Parser)]
#[command(name = "freezeframe", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take a snapshot of a scratch filesystem under a live writer, then check it (needs root)
    Demo,
    /// Emergency: thaw what a dead agent left frozen, as its record in the runtime directory lists
    Thaw {
        /// The agent's runtime directory
        #[arg(long, value_name = "DIR", default_value = DEFAULT_RUNTIME_DIR)]
        runtime_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => match freezeframe::demo::run() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("freezeframe demo: error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Thaw { runtime_dir } => match thaw(&runtime_dir) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("freezeframe: error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Returns whether everything listed was thawed (or was not frozen).
fn thaw(runtime_dir: &std::path::Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    let path = runtime_dir.join(record::RECORD_FILE);
    let Some(rec) = record::read(&path).with_context(|| format!("cannot read {}", path.display()))? else {
        println!("nothing to thaw: no record in {}", runtime_dir.display());
        return Ok(true);
    };
    let outcomes = record::thaw_recorded(&rec);
    record::remove(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let mut ok = true;
    for (mp, outcome) in outcomes {
        ok &= !matches!(outcome, ThawOutcome::Failed(_));
        println!("{}: {outcome}", mp.display());
    }
    Ok(ok)
}
