//! `freezeframe-agent`: the one-shot commands (`snapshot`, `plan`, `thaw`) and the D-Bus
//! service (`run`).

mod cmd;

use clap::{ArgAction, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// Show what a snapshot would freeze, in which order, and what it skips and why
    Plan {
        /// Print the plan as JSON
        #[arg(long)]
        json: bool,
    },
    /// Thaw filesystems that a dead agent left frozen (also run as ExecStopPost=)
    Thaw(cmd::thaw::ThawArgs),
    /// Serve org.freezeframe.Agent1 on the system bus until idle (what D-Bus activation runs)
    Run,
    /// Check what a snapshot proves, from its image or on a machine restored from it: when the
    /// disk was read (the probe's markers, the journal), whether its filesystems are sound and
    /// its databases recover; nothing is written to an image
    Verify(cmd::verify::VerifyArgs),
    /// Store the DigitalOcean API token (read from stdin) in `digitalocean.token_file`, mode 600
    SetupToken,
    /// Write the man page freezeframe-agent.1 into a directory (for packaging)
    #[command(hide = true)]
    Man { dir: PathBuf },
}

fn main() -> ExitCode {
    // Before any child: a psql run as postgres or a hook must not inherit the API token.
    // SAFETY: the first statement of main; no other thread exists yet to read the environment.
    unsafe { freezeframe_agent::secret::take_from_environment() };
    let cli = Cli::parse();
    freezeframe_agent::log::init(cli.verbose);
    // Fault points exist only in test builds; asking a build without them would silently test
    // nothing, so say so instead.
    if cfg!(not(feature = "failpoints")) && std::env::var_os("FAILPOINTS").is_some() {
        eprintln!(
            "freezeframe-agent: error: FAILPOINTS is set, but this build has no fault points \
             (build the workspace, or this crate with --features failpoints)"
        );
        return cmd::Exit::Usage.into();
    }
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Snapshot(args) => cmd::snapshot::run(config, &args),
        Command::Plan { json } => cmd::snapshot::run(
            config,
            &cmd::snapshot::SnapshotArgs {
                json,
                dry_run: true,
                ..Default::default()
            },
        ),
        Command::Thaw(args) => cmd::thaw::run(config, &args),
        Command::Run => cmd::run(config),
        Command::Verify(args) => cmd::verify::run(config, &args),
        Command::SetupToken => cmd::setup_token::run(config),
        Command::Man { dir } => man_page(&dir),
    };
    match result {
        Ok(code) => code.into(),
        Err(failure) => {
            let chain = freezeframe_agent::errors::error_chain(failure.error.as_ref());
            eprintln!("freezeframe-agent: error: {chain}");
            failure.exit.into()
        }
    }
}

/// What clap does not write into freezeframe-agent.1.
const AGENT_MAN_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
The snapshot or thaw failed (the report says why), or verify found the image not verified.
.TP
2
Bad configuration or arguments, or a set-up fault found before anything was frozen; nothing was touched.
.TP
75
Another snapshot is running on this machine.
.SH ENVIRONMENT
.TP
\fBDIGITALOCEAN_TOKEN\fR
The API token, when neither the credential \fBdo-token\fR nor the token file has one.
.TP
\fBDBUS_SYSTEM_BUS_ADDRESS\fR
The system bus (systemd, logind, and where \fBrun\fR serves).
.SH FILES
.TP
\fI/etc/freezeframe/config.toml\fR, \fI/etc/freezeframe/config.d/*.toml\fR
The configuration; every key is documented in the first.
.TP
\fI/etc/freezeframe/token\fR
The DigitalOcean API token, mode 600 (\fBsetup-token\fR writes it).
.TP
\fI/etc/freezeframe/hooks.d/\fR
Hook scripts, run with freeze and thaw as QEMU guest agent runs its own.
.TP
\fI/run/freezeframe/\fR
The lock, the record of what is frozen, the resumes owed, the last report.
.SH EXAMPLES
.PP
.nf
freezeframe\-agent plan
freezeframe\-agent snapshot \-\-json \-\-wait
freezeframe\-agent thaw
freezeframe\-agent verify \-\-image /var/tmp/restored.img
.fi
.SH "SEE ALSO"
freezeframe(1)
"#;

/// freezeframe-agent.1, from the clap definitions.
fn man_page(dir: &std::path::Path) -> Result<cmd::Exit, cmd::Failure> {
    use clap::CommandFactory;
    use cmd::Context;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    page.extend_from_slice(AGENT_MAN_SECTIONS.as_bytes());
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("freezeframe-agent.1");
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(cmd::Exit::Success)
}
