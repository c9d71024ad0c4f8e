//! `freezeframe-agent`'s commands: the arguments ([`main`]), the one-shot commands (`snapshot`,
//! `plan`, `thaw`, `verify`, `setup-token`), the D-Bus service (`run`), and how their errors map
//! to exit codes (one place: [`Failure`]).

pub(crate) mod setup_token;
pub(crate) mod snapshot;
pub(crate) mod thaw;
pub(crate) mod verify;

use crate::config::{ConfigError, ConfigSources, Settings};
use crate::freeze::PlanFromSystemError;
use crate::job::{self, JobError};
use crate::service::ServiceError;
use crate::verify::VerifyError;
use clap::{ArgAction, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes: the table both binaries share (0 success, 1 the snapshot or thaw failed, 2 bad
/// configuration or arguments, 75 (EX_TEMPFAIL) another snapshot is running).
pub(crate) use freezeframe_contract::Exit;

/// Why a subcommand failed, with its exit code. The code is decided when the failure is made,
/// from the typed error, by exhaustive matches: a new kind of error must be given its code here,
/// and nothing guesses afterwards from the error's text or chain.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) error: anyhow::Error,
}

impl Failure {
    /// A failure of the run itself (exit 1).
    pub(crate) fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            exit: Exit::Failed,
            error: error.into(),
        }
    }

    /// Bad configuration or arguments (exit 2).
    pub(crate) fn usage(error: impl Into<anyhow::Error>) -> Failure {
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
pub(crate) trait Context<T> {
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
            ConfigError::Read { .. }
            | ConfigError::Parse { .. }
            | ConfigError::Invalid { .. }
            | ConfigError::InvalidAt { .. } => Exit::Usage,
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

impl From<JobError> for Failure {
    fn from(e: JobError) -> Failure {
        let exit = match &e {
            JobError::Name(_) => Exit::Usage,
            JobError::Plan(plan) => plan_exit(plan),
            JobError::Runtime(runtime) => job::runtime_exit(runtime),
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
            VerifyError::Unreadable { .. }
            | VerifyError::UnknownFilesystem { .. }
            | VerifyError::Folder { .. }
            | VerifyError::Mounted { .. }
            | VerifyError::LiveMachine { .. } => Exit::Usage,
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

/// Loads settings from `--config PATH` or the system locations.
pub(crate) fn load_settings(config: Option<&Path>) -> Result<Settings, ConfigError> {
    match config {
        Some(path) => ConfigSources::explicit(path).load(),
        None => ConfigSources::system().load(),
    }
}

/// `freezeframe-agent run`: the D-Bus service.
pub(crate) fn run(config: Option<&Path>) -> Result<Exit, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::service::serve(config.map(Path::to_path_buf)))?;
    // A copy abandoned at a deadline may still be winding down; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(Exit::Success)
}

/// Database-consistent live snapshots: quiesce, freeze, snapshot, thaw.
#[derive(Debug, Parser)]
#[command(name = "freezeframe-agent", version)]
struct Cli {
    /// Configuration file; drop-ins are read from `config.d/` beside it
    /// [default: /usr/lib/freezeframe/config.d, /etc/freezeframe/config.toml, /etc/freezeframe/config.d]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take a snapshot now, in this process
    Snapshot(snapshot::SnapshotArgs),
    /// Show what a snapshot would freeze, in which order, and what it skips and why
    Plan {
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
    },
    /// Thaw filesystems that a dead agent left frozen (also run as ExecStopPost=)
    Thaw(thaw::ThawArgs),
    /// Serve org.freezeframe.Agent1 on the system bus until idle (what D-Bus activation runs)
    Run,
    /// Check what a snapshot proves, from its image or on a machine restored from it: when the
    /// disk was read (the probe's markers, the journal), whether its filesystems are sound and
    /// its databases recover; nothing is written to an image
    Verify(verify::VerifyArgs),
    /// Store the DigitalOcean API token (read from stdin) in `digitalocean.token_file`, mode 600
    SetupToken,
    /// Write the man pages (freezeframe-agent.1 and one per command) into a directory (for
    /// packaging)
    #[command(hide = true)]
    Man { dir: PathBuf },
}

/// The `freezeframe-agent` program: its arguments parsed, the command run, and its exit code.
pub fn main() -> ExitCode {
    // Before any child: a psql run as postgres or a hook must not inherit the API token.
    // SAFETY: the first statement of main; no other thread exists yet to read the environment.
    unsafe { crate::secret::take_from_environment() };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused_arguments(e),
    };
    crate::log::init(cli.verbose);
    // Fault points exist only in test builds; asking a build without them would silently test
    // nothing, so say so instead.
    if cfg!(not(feature = "failpoints")) && std::env::var_os("FAILPOINTS").is_some() {
        eprintln!(
            "freezeframe-agent: error: FAILPOINTS is set, but this build has no fault points \
             (build the workspace, or this crate with --features failpoints)"
        );
        return Exit::Usage.into();
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let config = cli.config.as_deref();
    let json = cli.command.json();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot::run(config, &args),
        Command::Plan { json } => snapshot::plan(config, json),
        Command::Thaw(args) => thaw::run(config, &args),
        Command::Run => run(config),
        Command::Verify(args) => verify::run(config, &args),
        Command::SetupToken => setup_token::run(config),
        Command::Man { dir } => man_page(&dir),
    };
    match result {
        Ok(code) => code.into(),
        Err(failure) => {
            let chain = crate::errors::error_chain(failure.error.as_ref());
            eprintln!("freezeframe-agent: error: {chain}");
            if json {
                failure_document(&chain, failure.exit);
            }
            failure.exit.into()
        }
    }
}

/// The program's definition as clap has it: what parses the arguments, and what its help and man
/// pages are made from.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

impl Command {
    /// Whether the command prints JSON (`--json`): then its failure is the one JSON document
    /// on stdout too.
    fn json(&self) -> bool {
        match self {
            Command::Snapshot(args) => args.json,
            Command::Plan { json } => *json,
            Command::Thaw(args) => args.json,
            Command::Verify(args) => args.json,
            Command::Run | Command::SetupToken | Command::Man { .. } => false,
        }
    }
}

/// A failure as the one JSON document on stdout: `{"error": …, "exit": N}`, as the CLI's.
fn failure_document(message: &str, exit: Exit) {
    let document = serde_json::json!({ "error": message, "exit": exit });
    crate::stdout::line(&document.to_string());
}

/// Arguments clap refused: its words on stderr, exit 2; with `--json` among them, the failure
/// is the one JSON document on stdout too. Help and the version are clap's to print.
fn refused_arguments(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !json {
        e.exit()
    }
    let message = e.render().to_string();
    let first = message.lines().next().unwrap_or_default();
    let _ = e.print();
    failure_document(first.strip_prefix("error: ").unwrap_or(first), Exit::Usage);
    Exit::Usage.into()
}

/// What clap does not write into the agent's pages, for all of them.
const AGENT_MAN_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBDIGITALOCEAN_TOKEN\fR
The API token, when neither the credential \fBdo\-token\fR nor the token file has one.
.TP
\fBDBUS_SYSTEM_BUS_ADDRESS\fR
The system bus (systemd, logind, and where \fBrun\fR serves).
.SH FILES
.TP
\fI/etc/freezeframe/config.toml\fR, \fI/etc/freezeframe/config.d/*.toml\fR
The configuration; every key is documented in the first.
.TP
\fI/etc/freezeframe/token\fR
The DigitalOcean API token, mode 600 (\fBsetup\-token\fR writes it).
.TP
\fI/etc/freezeframe/hooks.d/\fR
Hook scripts, run with freeze and thaw as QEMU guest agent runs its own.
.TP
\fI/run/freezeframe/\fR
The lock, the record of what is frozen, the resumes owed, the last report.
"#;

/// The sections after EXIT STATUS of the page of `sub` (`None`: freezeframe-agent.1).
fn agent_man_sections(sub: Option<&str>) -> String {
    let examples: &[&str] = match sub {
        None => &[
            "freezeframe-agent plan",
            "freezeframe-agent snapshot --json --wait",
            "freezeframe-agent thaw",
            "freezeframe-agent verify --image /var/tmp/restored.img",
        ],
        Some("snapshot") => &[
            "freezeframe-agent snapshot --json --wait",
            "freezeframe-agent snapshot --dry-run",
        ],
        Some("plan") => &["freezeframe-agent plan", "freezeframe-agent plan --json"],
        Some("thaw") => &["freezeframe-agent thaw"],
        Some("verify") => &["freezeframe-agent verify --image /var/tmp/restored.img"],
        Some("setup-token") => &["freezeframe-agent setup-token < token.txt"],
        Some(_) => &[],
    };
    let mut roff = String::from(AGENT_MAN_SECTIONS);
    if !examples.is_empty() {
        roff.push_str(".SH EXAMPLES\n.PP\n.nf\n");
        for example in examples {
            roff.push_str(&format!("{}\n", crate::man::escape(example)));
        }
        roff.push_str(".fi\n");
    }
    let see_also = match sub {
        None => "freezeframe(1)".to_string(),
        Some(_) => "freezeframe-agent(1), freezeframe(1)".to_string(),
    };
    roff.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", crate::man::escape(&see_also)));
    roff
}

/// freezeframe-agent.1 and a page for each subcommand, from the clap definitions.
fn man_page(dir: &std::path::Path) -> Result<Exit, Failure> {
    let sections = crate::man::Sections {
        program: freezeframe_contract::exit::Program::Agent,
        exits: Exit::of_agent,
        rest: agent_man_sections,
    };
    crate::man::write(command(), &sections, dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeError;

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
        let cycle = PlanFromSystemError::Plan(crate::freeze::plan::PlanError::Cycle(Vec::new()));
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
