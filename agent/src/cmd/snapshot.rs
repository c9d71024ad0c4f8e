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

/// A dry run as `--json` prints it: the plan, and what preflight found.
#[derive(serde::Serialize)]
struct DryRunAnswer<'a> {
    #[serde(flatten)]
    plan: &'a freezeframe_contract::plan::SnapshotPlan,
    preflight: PreflightAnswer,
}

#[derive(serde::Serialize)]
struct PreflightAnswer {
    /// A snapshot now would get past preflight.
    passed: bool,
    /// What would not stop it but matters.
    warnings: Vec<String>,
    /// Why it would stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The exit code a snapshot now would end with (and this dry run ends with).
    exit: u8,
}

/// Prints a dry run: the plan, then preflight's verdict; exits as the snapshot would have
/// exited at preflight (0 when it would go ahead).
fn show_dry_run(found: &job::DryRun, json: bool) -> Result<Exit, Failure> {
    let (exit, warnings, error) = match &found.preflight {
        Ok(warnings) => (Exit::Success, warnings.clone(), None),
        Err(why) => (would_fail_exit(why), Vec::new(), Some(why.to_string())),
    };
    if json {
        let answer = DryRunAnswer {
            plan: &found.plan,
            preflight: PreflightAnswer {
                passed: error.is_none(),
                warnings,
                error,
                exit: exit.code(),
            },
        };
        crate::stdout::line(&serde_json::to_string_pretty(&answer)?);
        return Ok(exit);
    }
    let mut out = render::plan(&found.plan);
    match &error {
        None => out.push_str("Preflight: passed (a snapshot now would go ahead)\n"),
        Some(e) => out.push_str(&format!(
            "Preflight: a snapshot now would FAIL (exit {}): {e}\n",
            exit.code()
        )),
    }
    for w in &warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    crate::stdout::write(out.as_bytes());
    Ok(exit)
}

/// The exit code the snapshot would have ended with, as for its report.
fn would_fail_exit(why: &job::WouldFail) -> Exit {
    match why {
        job::WouldFail::Runtime(e) => super::runtime_exit(e),
        job::WouldFail::Preflight(refusal) if refusal.setup => Exit::Usage,
        job::WouldFail::Preflight(_) => Exit::Failed,
    }
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
