//! `freezeframe-agent snapshot` (and `plan`): runs one transaction in this process.

use super::{Context, Exit, Failure};
use crate::job::{self, JobRequest};
use crate::notify::Notifier;
use crate::transaction::{Interrupt, Observer, Phase, Status};
use freezeframe_contract::render;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Default, clap::Args)]
pub(crate) struct SnapshotArgs {
    /// Print the result as one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// Print the plan (what would be frozen, in which order), run every check made before a
    /// freeze (the token and the Droplet too), say what would fail, and freeze nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Snapshot name [default: from `snapshot.name_template`]
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Wait until the provider reports the snapshot complete
    #[arg(long)]
    pub(crate) wait: bool,
}

pub(crate) fn run(config: Option<&Path>, args: &SnapshotArgs) -> Result<Exit, Failure> {
    if let Some(name) = &args.name {
        crate::naming::check_name(name)
            .map_err(crate::job::JobError::Name)
            .context("option --name")?;
    }
    let settings = super::load_settings(config).context("cannot load the configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let request = JobRequest {
        name: args.name.clone(),
        wait: args.wait,
        max_freeze: None,
    };
    if args.dry_run {
        let found = runtime
            .block_on(job::dry_run(&settings, &request))
            .context("dry run")?;
        return show_dry_run(&found, args.json);
    }
    let report = runtime.block_on(async {
        let (stop, interrupt) = Interrupt::new();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) =
                (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                return;
            };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            tracing::warn!("signal received: winding down (thaw, resume)");
            stop.signal();
        });
        let observer = Progress {
            notifier: Notifier::from_env(),
        };
        job::execute(&settings, &request, &observer, interrupt, None).await
    })?;
    // A copy abandoned at the deadline may still be winding down; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));

    if args.json {
        crate::stdout::line(&serde_json::to_string_pretty(&report)?);
    } else {
        crate::stdout::write(render::report(&report).as_bytes());
    }
    Ok(if report.status == Status::Succeeded {
        Exit::Success
    } else if report.setup_error {
        Exit::Usage
    } else {
        Exit::Failed
    })
}

/// `freezeframe-agent plan`: what a snapshot would freeze and quiesce, in which order.
pub(crate) fn plan(config: Option<&Path>, json: bool) -> Result<Exit, Failure> {
    let settings = super::load_settings(config).context("cannot load the configuration")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plan = runtime
        .block_on(job::snapshot_plan(&settings))
        .context("cannot plan which filesystems to freeze")?;
    if json {
        crate::stdout::line(&serde_json::to_string_pretty(&plan)?);
    } else {
        crate::stdout::write(render::plan(&plan).as_bytes());
    }
    Ok(Exit::Success)
}

/// Prints a dry run: the plan, then preflight's verdict; exits as the snapshot would have
/// exited at preflight (0 when it would go ahead).
fn show_dry_run(found: &job::DryRun, json: bool) -> Result<Exit, Failure> {
    let answer = found.answer();
    if json {
        crate::stdout::line(&serde_json::to_string_pretty(&answer)?);
    } else {
        crate::stdout::write(render::dry_run(&answer).as_bytes());
    }
    Ok(Exit::from_code(answer.preflight.exit).unwrap_or(Exit::Failed))
}

/// Logs phases and reports them to systemd (a datagram: safe inside the frozen window).
struct Progress {
    notifier: Notifier,
}

impl Observer for Progress {
    fn phase_started(&self, phase: Phase) {
        self.notifier.status(phase.activity());
        tracing::debug!(%phase, "phase started");
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration, ok: bool) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        tracing::info!(%phase, ms = %format_args!("{ms:.1}"), ok, "phase finished");
    }
}
