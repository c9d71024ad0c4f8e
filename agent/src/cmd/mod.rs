//! The agent's subcommands, and how their errors map to exit codes.

pub mod setup_token;
pub mod snapshot;
pub mod thaw;

use freezeframe_agent::config::{ConfigError, ConfigSources, Settings};
use std::path::Path;

/// Exit codes: 0 success, 1 the snapshot (or thaw) failed, 2 bad configuration or arguments,
/// 75 (EX_TEMPFAIL) another snapshot is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Busy = 75,
}

impl Exit {
    pub fn from_error(err: &anyhow::Error) -> Exit {
        let job = err
            .chain()
            .find_map(|e| e.downcast_ref::<freezeframe_agent::job::JobError>());
        if job.is_some_and(|j| j.is_busy()) {
            Exit::Busy
        } else if job.is_some_and(|j| j.is_usage())
            || matches!(
                err.downcast_ref::<freezeframe_agent::service::ServiceError>(),
                Some(freezeframe_agent::service::ServiceError::Config(_))
            )
            || err
                .chain()
                .any(|e| e.is::<ConfigError>() || e.is::<freezeframe_agent::freeze::PlanFromSystemError>())
        {
            Exit::Usage
        } else if err.chain().any(|e| {
            matches!(
                e.downcast_ref(),
                Some(freezeframe_agent::runtime::RuntimeError::Busy { .. })
            )
        }) {
            Exit::Busy
        } else {
            Exit::Failed
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// Loads settings from `--config PATH` or the system locations.
pub fn load_settings(config: Option<&Path>) -> Result<Settings, ConfigError> {
    match config {
        Some(path) => ConfigSources::explicit(path).load(),
        None => ConfigSources::system().load(),
    }
}

/// `freezeframe-agent run`: the D-Bus service.
pub fn run(config: Option<&Path>) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(freezeframe_agent::service::serve(config.map(Path::to_path_buf)))?;
    // A copy abandoned at a deadline may still be winding down; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(Exit::Success)
}
