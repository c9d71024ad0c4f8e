//! `freezeframe completions SHELL`: the shell completion script, from the argument definitions.

use crate::args::Cli;
use clap::CommandFactory;

/// Writes the completion script for `shell` on stdout.
pub fn write(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "freezeframe", &mut script);
    freezeframe_agent::stdout::write(&script);
}
