//! `freezeframe-agent setup-token`: stores the DigitalOcean API token where the agent reads it
//! (`digitalocean.token_file`), readable by root alone, without it passing through argv, the
//! shell history or the terminal's echo.

use super::{Context, Exit, Failure};
use crate::config::ProviderSettings;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

pub(crate) fn run(config: Option<&Path>) -> Result<Exit, Failure> {
    let settings = super::load_settings(config).context("cannot load the configuration")?;
    let ProviderSettings::DigitalOcean(digitalocean) = &settings.snapshot.provider else {
        eprintln!(
            "freezeframe-agent: error: the configured provider is {}, which needs no token; \
             set `snapshot.provider = \"digitalocean\"` first",
            settings.snapshot.provider.name()
        );
        return Ok(Exit::Usage);
    };
    let file = &digitalocean.token_file;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("DigitalOcean API token (not shown): ");
        let _ = std::io::stderr().flush();
    }
    let token = read_hidden(interactive).context("cannot read the token from stdin")?;
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        let what = if token.is_empty() {
            "no token read"
        } else {
            "what was read holds spaces or several lines, which no token does"
        };
        eprintln!(
            "freezeframe-agent: error: {what}: pipe the token in (`freezeframe-agent setup-token < \
             file`) or type it at the prompt; nothing was written"
        );
        return Ok(Exit::Usage);
    }
    if file.file_name().is_none() {
        let named = anyhow::anyhow!("the token file {} names no file", file.display());
        return Err(Failure::usage(named));
    }
    // Private from its first byte, then renamed over the old one: never through a link.
    crate::atomic_file::replace(file, format!("{token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write the token file {}", file.display()))?;
    crate::stdout::line(&format!(
        "stored the token in {} (mode 600); `freezeframe doctor` checks it against the API",
        file.display()
    ));
    Ok(Exit::Success)
}

/// One line from stdin, with the terminal's echo off when it is a terminal.
fn read_hidden(interactive: bool) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = if interactive { tcgetattr(&stdin).ok() } else { None };
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
        eprintln!();
    }
    read.map(|_| line)
}
