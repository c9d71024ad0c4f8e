//! The subcommands, one module each. [`one`] is the one dispatch from a parsed command to what it
//! does against one machine, used alike by a single machine's run (which prints its text) and a
//! fleet's (which prints its line); the commands that drive the DigitalOcean API or many agents
//! together (`verify`, `recover`, `snapshot --offline`, `snapshot --group`, `doctor`) are run by
//! their own modules' `run`.

pub mod completions;
pub(crate) mod doctor;
pub(crate) mod group;
pub(crate) mod list;
pub mod man;
pub(crate) mod offline;
pub(crate) mod plan;
pub(crate) mod prune;
pub(crate) mod recover;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod thaw;
pub(crate) mod verify;

use crate::agent::{Exit, Failure};
use crate::args::Command;
use crate::client::Target;
use crate::progress::Progress;

/// What a command did on one machine.
#[derive(Debug)]
pub struct Done {
    /// Its exit.
    pub exit: Exit,
    /// Its result, for `--json`.
    pub value: serde_json::Value,
    /// Its result for people, when it ran on one machine.
    pub text: String,
    /// One line about it, when it ran on one of several.
    pub line: String,
}

/// How a command ended, for the one place that prints it (`route::finish`).
#[derive(Debug)]
pub enum Ended {
    /// One result, printed as one JSON document with `--json`, else as its text.
    Done(Done),
    /// Printed already, one JSON document (or line) per machine as each finished; their exit.
    Streamed(Exit),
}

/// Runs `command` against the agent at `target`, its progress shown on `progress`.
pub async fn one(command: &Command, target: &Target, progress: &mut dyn Progress) -> Result<Done, Failure> {
    match command {
        Command::Snapshot {
            name, wait, dry_run, ..
        } => {
            let request = crate::agent::SnapshotRequest {
                name: name.clone(),
                wait: *wait,
                dry_run: *dry_run,
            };
            snapshot::run(target, &request, progress).await
        }
        Command::Plan => plan::run(target).await,
        Command::Status => status::run(target).await,
        Command::List { group } => list::run(target, group.as_deref()).await,
        // --keep-groups went to group retention before: here --keep is given.
        Command::Prune { keep, dry_run, .. } => prune::run(target, keep.unwrap_or(1), *dry_run).await,
        Command::Thaw { runtime_dir } => thaw::run(target, runtime_dir.as_deref()).await,
        Command::Doctor
        | Command::Verify { .. }
        | Command::Recover
        | Command::Completions { .. }
        | Command::Man { .. } => Err(Failure::new(Exit::Usage, "this command takes one machine")),
    }
}
