//! The man pages of both programs (`freezeframe man`, `freezeframe-agent man`), from their clap
//! definitions: the program's page and one for every subcommand it names (clap's `help` aside,
//! which `-h` describes), each with the version
//! in its footer, an EXIT STATUS from the exit table ([`Exit`]) for that command, and the
//! sections clap does not write.

use freezeframe_contract::exit::Program;
use freezeframe_contract::Exit;
use std::path::{Path, PathBuf};

/// What a program's pages say beyond clap's rendering, by subcommand name (`None`: the
/// program's own page).
pub struct Sections {
    /// Whose pages: the exit table says each code's meaning for each program.
    pub program: Program,
    /// The codes the command can end with: [`Exit::of_cli`] or [`Exit::of_agent`].
    pub exits: fn(Option<&str>) -> Option<&'static [Exit]>,
    /// ENVIRONMENT, FILES, EXAMPLES and SEE ALSO (whichever apply), as roff.
    pub rest: fn(Option<&str>) -> String,
}

/// Writes `program`'s pages into `dir` and returns their paths. Fails, writing nothing, for a
/// visible subcommand the exit table does not know or one with subcommands of its own (whose
/// pages this does not make).
pub fn write(program: clap::Command, sections: &Sections, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    // No page for clap's `help` subcommand (as clap_mangen's own generate_to): it would list
    // the whole tree again as pages of its own. Building copies the global options into each
    // subcommand, so its page lists them.
    let mut program = program.disable_help_subcommand(true);
    program.build();
    let footer = format!(
        "{} {}",
        program.get_name(),
        program.get_version().unwrap_or_default()
    );
    let mut pages = vec![render(&program, None, &footer, sections)?];
    for sub in program.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_subcommands().any(|s| !s.is_hide_set()) {
            return Err(std::io::Error::other(format!(
                "`{}` has subcommands, which get no pages",
                sub.get_name()
            )));
        }
        pages.push(render(sub, Some(sub.get_name()), &footer, sections)?);
    }
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, roff) in pages {
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, roff)?;
        written.push(path);
    }
    Ok(written)
}

/// One page: its file name (without `.1`) and its roff.
fn render(
    command: &clap::Command,
    sub: Option<&str>,
    footer: &str,
    sections: &Sections,
) -> std::io::Result<(String, Vec<u8>)> {
    let exits = (sections.exits)(sub).ok_or_else(|| {
        std::io::Error::other(format!(
            "the exit table (contract/src/exit.rs) has no line for `{}`",
            sub.unwrap_or_default()
        ))
    })?;
    // A built subcommand's display name is its page's: `freezeframe-snapshot`.
    let name = command
        .get_display_name()
        .unwrap_or_else(|| command.get_name())
        .to_string();
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone().name(name.clone()))
        .source(footer)
        .manual("freezeframe")
        .render(&mut roff)?;
    roff.extend_from_slice(exit_status(exits, sections.program).as_bytes());
    roff.extend_from_slice((sections.rest)(sub).as_bytes());
    Ok((name, roff))
}

/// The EXIT STATUS section: each code and what it means from `program`, as a sentence.
pub fn exit_status(exits: &[Exit], program: Program) -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for exit in exits {
        roff.push_str(&format!(
            ".TP\n{}\n{}\n",
            exit.code(),
            escape(&exit_sentence(*exit, program))
        ));
    }
    roff
}

/// What `exit` means from `program`, as the EXIT STATUS sections print it: the table's words
/// as a sentence, without markdown's backquotes.
pub fn exit_sentence(exit: Exit, program: Program) -> String {
    let meaning = exit.meaning(program).unwrap_or_default().replace('`', "");
    let mut chars = meaning.chars();
    let first: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    format!("{first}{}.", chars.as_str())
}

/// Text as roff takes it: hyphens as such, no line starting with a control character.
pub fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}
