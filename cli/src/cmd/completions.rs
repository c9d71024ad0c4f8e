//! `freezeframe completions SHELL`: the shell completion script, from the argument definitions
//! ([`args::command`](crate::args::command)), with what they hide left out.

/// Writes the completion script for `shell` on stdout.
pub fn write(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut shown(crate::args::command()),
        "freezeframe",
        &mut script,
    );
    freezeframe_agent::stdout::write(&script);
}

/// `program` without its hidden options and subcommands, which clap_complete's scripts would
/// offer (its generators do not look at `hide`): built first, so that the global options are
/// copied into each subcommand and the help subcommand is there.
pub fn shown(mut program: clap::Command) -> clap::Command {
    program.build();
    copy_shown(&program)
}

fn copy_shown(command: &clap::Command) -> clap::Command {
    let mut copy = clap::Command::new(command.get_name().to_string())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args(command.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(copy_shown),
        );
    if let Some(about) = command.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        copy = copy.version(version.to_string());
    }
    copy
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shown_definition_is_a_valid_one_without_what_is_hidden() {
        crate::args::command().debug_assert();
        let shown = super::shown(crate::args::command());
        shown.clone().debug_assert();
        assert!(shown.get_arguments().all(|a| !a.is_hide_set()));
        assert!(shown.get_arguments().all(|a| a.get_long() != Some("api-url")));
        let snapshot = shown.find_subcommand("snapshot").unwrap();
        assert!(snapshot.get_arguments().any(|a| a.get_long() == Some("host")));
        assert!(snapshot.get_arguments().all(|a| a.get_long() != Some("api-url")));
    }
}
