//! `freezeframe-agent thaw`: the emergency exit. Thaws what the record in the runtime directory
//! lists (left by an agent and guard that both died), or the mountpoints named.

use super::Exit;
use anyhow::Context;
use freezeframe_agent::config::DEFAULT_RUNTIME_DIR;
use freezeframe_agent::freeze::sys;
use freezeframe_agent::guard::record::{self, ThawOutcome};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ThawArgs {
    /// Runtime directory holding the record [default: `agent.runtime_dir` from the
    /// configuration, or /run/freezeframe if it cannot be read]
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Thaw these mountpoints instead of what the record lists
    mountpoints: Vec<PathBuf>,
}

pub fn run(config: Option<&Path>, args: &ThawArgs) -> anyhow::Result<Exit> {
    let outcomes: Vec<(PathBuf, ThawOutcome)> = if args.mountpoints.is_empty() {
        let dir = match &args.runtime_dir {
            Some(dir) => dir.clone(),
            // An emergency thaw must work with a broken configuration too.
            None => super::load_settings(config)
                .map(|s| s.runtime_dir)
                .unwrap_or_else(|e| {
                    tracing::warn!("{e}; using {DEFAULT_RUNTIME_DIR}");
                    DEFAULT_RUNTIME_DIR.into()
                }),
        };
        let units_failed = thaw_units(&dir)?;
        let path = dir.join(record::RECORD_FILE);
        let Some(rec) = record::read(&path).with_context(|| format!("cannot read {}", path.display()))?
        else {
            println!("nothing to thaw: no record in {}", dir.display());
            return Ok(if units_failed { Exit::Failed } else { Exit::Success });
        };
        let outcomes = record::thaw_recorded(&rec);
        record::remove(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        if units_failed {
            return report(&outcomes).map(|_| Exit::Failed);
        }
        outcomes
    } else {
        args.mountpoints
            .iter()
            .map(|mp| {
                let outcome = match sys::open_mountpoint(mp) {
                    Ok(fd) => record::thaw_one(&fd),
                    Err(e) => ThawOutcome::Failed(format!("cannot open: {e}")),
                };
                (mp.clone(), outcome)
            })
            .collect()
    };
    report(&outcomes)
}

fn report(outcomes: &[(PathBuf, ThawOutcome)]) -> anyhow::Result<Exit> {
    let mut failed = false;
    for (mp, outcome) in outcomes {
        failed |= matches!(outcome, ThawOutcome::Failed(_));
        println!("{}: {outcome}", mp.display());
    }
    Ok(if failed { Exit::Failed } else { Exit::Success })
}

/// Thaws the systemd units a dead agent left frozen, if the record lists any; whether any
/// could not be thawed.
fn thaw_units(dir: &Path) -> anyhow::Result<bool> {
    use freezeframe_agent::systemd;
    if systemd::leftovers::recorded(dir).is_empty() {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(async {
        let units = systemd::connect_or_unreachable(None).await;
        systemd::leftovers::thaw_recorded(dir, units.as_ref()).await
    });
    let mut failed = false;
    for (unit, outcome) in outcomes {
        match outcome {
            Ok(()) => println!("{unit}: thawed"),
            Err(e) => {
                failed = true;
                println!("{unit}: FAILED: {e}");
            }
        }
    }
    Ok(failed)
}
