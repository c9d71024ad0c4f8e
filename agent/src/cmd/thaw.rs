//! `freezeframe-agent thaw`: the emergency exit. Thaws what the record in the runtime directory
//! lists (left by an agent and guard that both died), then runs the resumes a dead agent owed
//! (units to thaw or start, hooks to `thaw`); or thaws the mountpoints named.

use super::Exit;
use anyhow::Context;
use freezeframe_agent::config::{DEFAULT_HOOK_TIMEOUT, DEFAULT_RUNTIME_DIR};
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
    if !args.mountpoints.is_empty() {
        let outcomes: Vec<(PathBuf, ThawOutcome)> = args
            .mountpoints
            .iter()
            .map(|mp| {
                let outcome = match sys::open_mountpoint(mp) {
                    Ok(fd) => record::thaw_one(&fd),
                    Err(e) => ThawOutcome::Failed(format!("cannot open: {e}")),
                };
                (mp.clone(), outcome)
            })
            .collect();
        return Ok(report(&outcomes));
    }
    // An emergency thaw must work with a broken configuration too.
    let settings = super::load_settings(config)
        .map_err(|e| tracing::warn!("{e}; using defaults ({DEFAULT_RUNTIME_DIR})"))
        .ok();
    let dir = match (&args.runtime_dir, &settings) {
        (Some(dir), _) => dir.clone(),
        (None, Some(settings)) => settings.runtime_dir.clone(),
        (None, None) => DEFAULT_RUNTIME_DIR.into(),
    };
    let hook_timeout = settings.map_or(DEFAULT_HOOK_TIMEOUT, |s| s.quiesce.hook_timeout);
    // Filesystems first: a resume (a hook, a service starting) may need to write to them.
    let path = dir.join(record::RECORD_FILE);
    let fs_exit = match record::read(&path).with_context(|| format!("cannot read {}", path.display()))? {
        None => {
            println!("nothing to thaw: no record in {}", dir.display());
            Exit::Success
        }
        Some(rec) => {
            let outcomes = record::thaw_recorded(&rec);
            record::remove(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            report(&outcomes)
        }
    };
    let resumes_failed = resume_pending(&dir, hook_timeout)?;
    Ok(if resumes_failed { Exit::Failed } else { fs_exit })
}

fn report(outcomes: &[(PathBuf, ThawOutcome)]) -> Exit {
    let mut failed = false;
    for (mp, outcome) in outcomes {
        failed |= matches!(outcome, ThawOutcome::Failed(_));
        println!("{}: {outcome}", mp.display());
    }
    if failed {
        Exit::Failed
    } else {
        Exit::Success
    }
}

/// Runs the resumes a dead agent owed (units to thaw or start, hooks to `thaw`), if the record
/// lists any; whether any failed.
fn resume_pending(dir: &Path, hook_timeout: std::time::Duration) -> anyhow::Result<bool> {
    use freezeframe_agent::{quiesce::pending, systemd};
    if pending::recorded(dir).is_empty() {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(async {
        let units = systemd::connect_or_unreachable(None).await;
        pending::resume_recorded(dir, units.as_ref(), hook_timeout).await
    });
    let mut failed = false;
    for (entry, outcome) in outcomes {
        match outcome {
            Ok(()) => println!("{entry}: done"),
            Err(e) => {
                failed = true;
                println!("{entry}: FAILED: {e}");
            }
        }
    }
    Ok(failed)
}
