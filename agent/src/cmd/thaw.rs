//! `freezeframe-agent thaw`: the emergency exit. Thaws what the record in the runtime directory
//! lists (left by an agent and guard that both died), then runs the resumes a dead agent owed
//! (units to thaw or start, hooks to `thaw`), through [`runtime::recover`]; or thaws the
//! mountpoints named.

use super::{Exit, Failure};
use crate::config::{DEFAULT_HOOK_TIMEOUT, DEFAULT_RUNTIME_DIR};
use crate::guard::record::{self, ThawOutcome};
use crate::kernel::sys;
use crate::runtime::{self, Recovered};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub(crate) struct ThawArgs {
    /// Runtime directory holding the record [default: `agent.runtime_dir` from the
    /// configuration, or /run/freezeframe if it cannot be read]
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Print what was done as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Thaw these mountpoints instead of what the record lists
    mountpoints: Vec<PathBuf>,
}

pub(crate) fn run(config: Option<&Path>, args: &ThawArgs) -> Result<Exit, Failure> {
    let (recovered, place) = if args.mountpoints.is_empty() {
        recover(config, args.runtime_dir.as_deref())?
    } else {
        let filesystems = args
            .mountpoints
            .iter()
            .map(|mp| {
                let outcome = match sys::open_mountpoint(mp) {
                    Ok(fd) => record::thaw_one(&fd),
                    Err(e) => ThawOutcome::Failed(format!("cannot open: {e}")),
                };
                crate::runtime::recovered_filesystem((mp.clone(), outcome))
            })
            .collect();
        let named = Recovered {
            filesystems,
            resumes: Vec::new(),
        };
        (named, String::new())
    };
    if args.json {
        crate::stdout::line(&serde_json::to_string_pretty(&recovered)?);
    } else {
        crate::stdout::line(recovered.text(&place).trim_end());
    }
    Ok(if recovered.failed() {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// Recovers the runtime directory the arguments or the configuration name.
fn recover(config: Option<&Path>, runtime_dir: Option<&Path>) -> Result<(Recovered, String), Failure> {
    // An emergency thaw must work with a broken configuration too.
    let settings = super::load_settings(config)
        .map_err(|e| tracing::warn!("{e}; using defaults ({DEFAULT_RUNTIME_DIR})"))
        .ok();
    let dir = match (runtime_dir, &settings) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(settings)) => settings.runtime_dir.clone(),
        (None, None) => DEFAULT_RUNTIME_DIR.into(),
    };
    let hook_timeout = settings
        .as_ref()
        .map_or(DEFAULT_HOOK_TIMEOUT, |s| s.quiesce.hook_timeout);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let recovered = tokio
        .block_on(runtime::recover(&dir, None, hook_timeout))
        .map_err(|e| anyhow::anyhow!("cannot recover {}: {e}", dir.display()))?;
    // The guard's notes of a dead agent, counted now: the runtime directory goes at reboot.
    if let Some(settings) = settings.as_ref().filter(|s| s.runtime_dir == dir) {
        let history = &settings.history;
        if crate::history::record(&history.file, history.keep, &dir, None) {
            tokio.block_on(crate::metrics::publish_between_runs(settings));
        }
    }
    Ok((recovered, dir.display().to_string()))
}
