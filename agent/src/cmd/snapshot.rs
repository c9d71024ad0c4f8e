//! `freezeframe-agent snapshot` (and `plan`): runs one transaction in this process.

use super::Exit;
use anyhow::Context;
use freezeframe_agent::config::{self, ProviderSettings, Settings};
use freezeframe_agent::freeze::plan::{Plan, Selection};
use freezeframe_agent::freeze::{self, LiveFilesystems};
use freezeframe_agent::naming::{self, OwnNames, SnapshotName};
use freezeframe_agent::notify::Notifier;
use freezeframe_agent::provider::digitalocean::DigitalOcean;
use freezeframe_agent::provider::local_image::LocalImage;
use freezeframe_agent::provider::SnapshotProvider;
use freezeframe_agent::quiesce::assembly::{Detection, QuiescePlan};
use freezeframe_agent::quiesce::auto::Handler;
use freezeframe_agent::runtime::RuntimeDir;
use freezeframe_agent::transaction::{
    Interrupt, Observer, Options, Phase, Report, Retention, Status, Transaction,
};
use freezeframe_agent::{dbus, logind, systemd};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Default, clap::Args)]
pub struct SnapshotArgs {
    /// Print the result as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Print the plan (what would be frozen, in which order) and freeze nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Snapshot name [default: from `snapshot.name_template`]
    #[arg(long)]
    pub name: Option<String>,
    /// Wait until the provider reports the snapshot complete
    #[arg(long)]
    pub wait: bool,
}

pub fn run(config: Option<&Path>, args: &SnapshotArgs) -> anyhow::Result<Exit> {
    if let Some(name) = &args.name {
        config::validate_name("--name", name)?;
    }
    let settings = super::load_settings(config).context("cannot load the configuration")?;
    let plan = freeze::plan_from_system(Selection {
        mountpoints: settings.freeze.mountpoints.as_deref(),
        exclude: &settings.freeze.exclude,
    })
    .context("cannot plan which filesystems to freeze")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.dry_run {
        let quiesce = runtime.block_on(async {
            let bus = dbus::system_bus().await.ok();
            let units = systemd::connect_or_unreachable(bus.as_ref()).await;
            QuiescePlan::discover(&settings.quiesce, units).await
        });
        print_plan(&settings, &plan, &quiesce, args.json)?;
        return Ok(Exit::Success);
    }
    let host = naming::hostname();
    let name = match &args.name {
        Some(name) => SnapshotName::Fixed(name.clone()),
        None => SnapshotName::Template {
            template: settings.snapshot.name_template.clone(),
            host: host.clone(),
            at: std::time::SystemTime::now(),
        },
    };

    let runtime_dir = RuntimeDir::open(&settings.runtime_dir)?;
    let lock = runtime_dir.lock()?;
    if let Some(outcomes) = runtime_dir
        .recover(&lock)
        .context("cannot recover from an earlier run")?
    {
        for (mp, outcome) in outcomes {
            tracing::warn!("an earlier run left {} frozen: {outcome}", mp.display());
        }
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
            let _ = stop.send(true);
        });
        let mut provider: Box<dyn SnapshotProvider> = match &settings.snapshot.provider {
            ProviderSettings::LocalImage { image_dir } => Box::new(LocalImage::new(image_dir.clone())),
            ProviderSettings::DigitalOcean(s) => Box::new(DigitalOcean::new(
                s.clone(),
                settings.freeze.max_freeze,
                settings.snapshot.keep_last > 0,
            )),
        };
        let bus = dbus::system_bus().await.ok();
        let units = systemd::connect_or_unreachable(bus.as_ref()).await;
        let quiesce = QuiescePlan::discover(&settings.quiesce, units).await;
        // Held until the run ends: a reboot asked for meanwhile waits for the thaw and resume.
        let _inhibitor = match &bus {
            Some(bus) => logind::inhibit_shutdown(bus)
                .await
                .map_err(|e| tracing::debug!("no shutdown inhibitor: {e}"))
                .ok(),
            None => None,
        };
        let mut filesystems = LiveFilesystems::new(plan.targets.clone(), &settings.runtime_dir);
        let observer = Progress {
            notifier: Notifier::from_env(),
        };
        Transaction {
            filesystems: &mut filesystems,
            provider: provider.as_mut(),
            quiescers: quiesce.quiescers(),
            observer: &observer,
            options: Options {
                name,
                max_freeze: settings.freeze.max_freeze,
                wait: args.wait,
                on_quiesce_failure: settings.quiesce.on_failure,
                retention: Some(Retention {
                    keep_last: settings.snapshot.keep_last as usize,
                    ours: OwnNames {
                        template: settings.snapshot.name_template.clone(),
                        host,
                    },
                }),
                unquiesced: quiesce.unquiesced(),
            },
            skipped: plan.skipped.clone(),
            interrupt,
        }
        .run()
        .await
    });
    // A copy abandoned at the deadline may still be winding down; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(lock);

    print_report(&report, args.json)?;
    Ok(if report.status == Status::Succeeded {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// Logs phases and reports them to systemd (a datagram: safe inside the frozen window).
struct Progress {
    notifier: Notifier,
}

impl Observer for Progress {
    fn phase_started(&self, phase: Phase) {
        let status = match phase {
            Phase::Preflight => "checking",
            Phase::Quiesce => "quiescing applications",
            Phase::Sync => "flushing filesystems",
            Phase::Freeze => "freezing filesystems",
            Phase::Request => "frozen: requesting the snapshot",
            Phase::Thaw => "thawing filesystems",
            Phase::Resume => "resuming applications",
            Phase::Wait => "waiting for the snapshot to complete",
            Phase::Prune => "deleting old snapshots",
        };
        self.notifier.status(status);
        tracing::debug!(%phase, "phase started");
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration, ok: bool) {
        tracing::info!(%phase, ms = elapsed.as_secs_f64() * 1000.0, ok, "phase finished");
    }
}

/// The quiescers a plan lists, in prepare order, as lines for people and entries for JSON.
fn quiesce_lines(quiesce: &QuiescePlan) -> Vec<String> {
    let mut lines = match &quiesce.hooks {
        Ok(found) => found.iter().map(|h| format!("hook {}", h.display())).collect(),
        Err(e) => vec![format!("hooks: refused: {e}")],
    };
    lines.extend(
        quiesce
            .quiescers()
            .iter()
            .filter(|q| q.name() != "hooks")
            .map(|q| q.name().to_string()),
    );
    lines
}

/// The database units detection found and what handles each, for JSON.
fn detection_json(quiesce: &QuiescePlan) -> serde_json::Value {
    match &quiesce.detection {
        Detection::Off => serde_json::json!({ "enabled": false }),
        Detection::NoSystemd(e) => serde_json::json!({ "enabled": true, "systemd": e }),
        Detection::Failed(e) => serde_json::json!({ "enabled": true, "error": e }),
        Detection::Found(found) => serde_json::json!({
            "enabled": true,
            "units": found.iter().map(|d| serde_json::json!({
                "unit": d.unit,
                "kind": d.kind,
                "main_pid": d.main_pid,
                "handled_by": match &d.handler {
                    Handler::Native(q) => format!("native {} quiescer", q.kind()),
                    Handler::Configured => "a configured [[quiescer]]".to_string(),
                    Handler::Unhandled(_) => "nothing".to_string(),
                },
                "note": match &d.handler {
                    Handler::Unhandled(why) => Some(why.as_str()),
                    _ => None,
                },
            })).collect::<Vec<_>>(),
        }),
    }
}

fn print_plan(settings: &Settings, plan: &Plan, quiesce: &QuiescePlan, json: bool) -> anyhow::Result<()> {
    let lines = quiesce_lines(quiesce);
    if json {
        let value = serde_json::json!({
            "provider": settings.snapshot.provider.name(),
            "max_freeze_ms": settings.freeze.max_freeze.as_millis() as u64,
            "quiesce": lines,
            "databases": detection_json(quiesce),
            "not_quiesced": quiesce.unquiesced(),
            "freeze_order": plan.targets,
            "skipped": plan.skipped,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "Would freeze, in this order (thawed in reverse), for at most {}:",
        humantime::format_duration(settings.freeze.max_freeze)
    );
    for (i, t) in plan.targets.iter().enumerate() {
        println!(
            "  {}. {}  ({}, {})",
            i + 1,
            t.mountpoint.display(),
            t.fstype,
            t.source
        );
    }
    if plan.targets.is_empty() {
        println!("  nothing");
    }
    if !plan.skipped.is_empty() {
        println!("Skipped:");
        for s in &plan.skipped {
            println!("  {}  ({}): {}", s.mountpoint.display(), s.fstype, s.reason);
        }
    }
    match &quiesce.detection {
        Detection::Off => println!("Database units: not detected (quiesce.auto = false)"),
        Detection::NoSystemd(e) => println!("Database units: none detected ({e})"),
        Detection::Failed(e) => println!("Database units: detection FAILED: {e}"),
        Detection::Found(found) if found.is_empty() => println!("Database units: none active"),
        Detection::Found(found) => {
            println!("Database units:");
            for d in found {
                let how = match &d.handler {
                    Handler::Native(q) => format!("native {} quiescer", q.kind()),
                    Handler::Configured => "the configured [[quiescer]]".into(),
                    Handler::Unhandled(why) => format!("NOT quiesced: {why}"),
                };
                println!("  {} (pid {}): {how}", d.unit, d.main_pid);
            }
        }
    }
    if lines.is_empty() {
        println!("Would quiesce: nothing (filesystem-consistent)");
    } else {
        println!("Would quiesce, in this order (resumed in reverse):");
        for q in &lines {
            println!("  {q}");
        }
    }
    println!("Provider: {}", settings.snapshot.provider.name());
    Ok(())
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let consistency = report
        .consistency
        .map(|c| {
            format!(
                " ({}-consistent)",
                serde_json::to_value(c)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            )
        })
        .unwrap_or_default();
    match report.status {
        Status::Succeeded => println!("snapshot {} succeeded{consistency}", report.snapshot_name),
        Status::Failed => println!("snapshot {} FAILED{consistency}", report.snapshot_name),
    }
    if let Some(e) = &report.error {
        println!(
            "  error in {}: {e}",
            report.failed_phase.map(|p| p.to_string()).unwrap_or_default()
        );
    }
    if let Some(id) = &report.action_id {
        println!("  {} request: {id}", report.provider);
    }
    if let Some(id) = &report.snapshot_id {
        println!("  snapshot: {id}");
    }
    for p in &report.pruned {
        println!("  deleted old snapshot {} ({})", p.id, p.name);
    }
    let frozen: Vec<String> = report
        .filesystems
        .frozen
        .iter()
        .map(|t| t.mountpoint.display().to_string())
        .collect();
    if !frozen.is_empty() {
        println!(
            "  writes blocked for {:.1} ms (request {:.1} ms) on {}",
            report.frozen_ms,
            report.request_ms,
            frozen.join(", ")
        );
    }
    println!(
        "  quiesce {:.1} ms, sync {:.1} ms, resume {:.1} ms, total {:.1} ms",
        report.quiesce_ms, report.sync_ms, report.resume_ms, report.total_ms
    );
    for w in &report.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}
