//! The agent's subcommands, and how their errors map to exit codes (one place: [`Failure`]).

pub mod setup_token;
pub mod snapshot;
pub mod thaw;
pub mod verify;

use freezeframe_agent::config::{ConfigError, ConfigSources, Settings};
use freezeframe_agent::freeze::PlanFromSystemError;
use freezeframe_agent::job::JobError;
use freezeframe_agent::runtime::RuntimeError;
use freezeframe_agent::service::ServiceError;
use freezeframe_agent::verify::VerifyError;
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

/// Why a subcommand failed, with its exit code. The code is decided when the failure is made,
/// from the typed error, by exhaustive matches: a new kind of error must be given its code here,
/// and nothing guesses afterwards from the error's text or chain.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure of the run itself (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit: Exit::Failed,
            error: error.into(),
        }
    }

    /// Bad configuration or arguments (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit: Exit::Usage,
            error: error.into(),
        }
    }

    /// Says what was being done, keeping the exit code.
    fn context(self, doing: impl std::fmt::Display + Send + Sync + 'static) -> Failure {
        Failure {
            exit: self.exit,
            error: self.error.context(doing),
        }
    }
}

/// `.context()` for results whose errors know their exit code.
pub trait Context<T> {
    fn context(self, doing: &'static str) -> Result<T, Failure>;
    fn with_context<D: std::fmt::Display + Send + Sync + 'static>(
        self,
        doing: impl FnOnce() -> D,
    ) -> Result<T, Failure>;
}

impl<T, E: Into<Failure>> Context<T> for Result<T, E> {
    fn context(self, doing: &'static str) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(doing))
    }

    fn with_context<D: std::fmt::Display + Send + Sync + 'static>(
        self,
        doing: impl FnOnce() -> D,
    ) -> Result<T, Failure> {
        self.map_err(|e| e.into().context(doing()))
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        let exit = match &e {
            ConfigError::Read { .. } | ConfigError::Parse { .. } | ConfigError::Invalid { .. } => Exit::Usage,
        };
        Failure {
            exit,
            error: e.into(),
        }
    }
}

impl From<PlanFromSystemError> for Failure {
    fn from(e: PlanFromSystemError) -> Failure {
        let exit = plan_exit(&e);
        Failure {
            exit,
            error: e.into(),
        }
    }
}

/// A plan the configuration makes impossible is the user's to fix; an unreadable mount table
/// is this machine's fault.
fn plan_exit(e: &PlanFromSystemError) -> Exit {
    match e {
        PlanFromSystemError::Plan(_) => Exit::Usage,
        PlanFromSystemError::Read(_) | PlanFromSystemError::Parse(_) => Exit::Failed,
    }
}

fn runtime_exit(e: &RuntimeError) -> Exit {
    match e {
        RuntimeError::Busy { .. } => Exit::Busy,
        RuntimeError::Dir { .. } => Exit::Failed,
        // The folder the configuration names (or its default) is the owner's to fix.
        RuntimeError::NotPrivate { .. } => Exit::Usage,
    }
}

impl From<JobError> for Failure {
    fn from(e: JobError) -> Failure {
        let exit = match &e {
            JobError::Name(_) => Exit::Usage,
            JobError::Plan(plan) => plan_exit(plan),
            JobError::Runtime(runtime) => runtime_exit(runtime),
            JobError::Recover(_) => Exit::Failed,
            JobError::Offline => Exit::Usage,
        };
        Failure {
            exit,
            error: e.into(),
        }
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Failure {
        let exit = match &e {
            ServiceError::Config(_) => Exit::Usage,
            ServiceError::Bus { .. } | ServiceError::Metrics { .. } => Exit::Failed,
        };
        Failure {
            exit,
            error: e.into(),
        }
    }
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Failure {
        let exit = match &e {
            VerifyError::Unreadable { .. } | VerifyError::UnknownFilesystem { .. } => Exit::Usage,
            VerifyError::Tool(_) => Exit::Failed,
        };
        Failure {
            exit,
            error: e.into(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::failed(e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Failure {
        Failure::failed(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::failed(e)
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
pub fn run(config: Option<&Path>) -> Result<Exit, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(freezeframe_agent::service::serve(config.map(Path::to_path_buf)))?;
    // A copy abandoned at a deadline may still be winding down; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_exit_code_and_context_keeps_it() {
        let busy: Result<(), JobError> = Err(JobError::Runtime(RuntimeError::Busy { pid: Some(7) }));
        let failure = busy.context("cannot snapshot").unwrap_err();
        assert_eq!(failure.exit, Exit::Busy);
        assert!(
            format!("{:#}", failure.error).starts_with("cannot snapshot: busy"),
            "{:#}",
            failure.error
        );

        let bad_config = ConfigError::Invalid {
            key: "freeze.max_freeze",
            problem: "out of range".into(),
        };
        assert_eq!(Failure::from(bad_config).exit, Exit::Usage);
        let cycle = PlanFromSystemError::Plan(freezeframe_agent::freeze::plan::PlanError::Cycle(Vec::new()));
        assert_eq!(Failure::from(JobError::Plan(cycle)).exit, Exit::Usage);
        let unreadable = PlanFromSystemError::Read(std::io::Error::other("EIO"));
        assert_eq!(
            Failure::from(unreadable).exit,
            Exit::Failed,
            "the machine's fault, not the user's"
        );
        let io: Result<(), std::io::Error> = Err(std::io::Error::other("disk full"));
        assert_eq!(io.context("cannot write").unwrap_err().exit, Exit::Failed);
    }
}
