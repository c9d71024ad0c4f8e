//! Every check a snapshot's preflight makes, run on their own and reported one by one with the
//! fix for each failure: what `freezeframe doctor` shows. Nothing here changes the machine,
//! except the freeze self-test, which freezes and thaws a scratch loop filesystem of its own.

use crate::config::Settings;
use crate::freeze::plan::Plan;
use crate::freeze::PlanFromSystemError;
use crate::kernel::sys;
use crate::loop_mount::{Attach, LoopMount};
use crate::runtime::RuntimeDir;
use crate::transaction::ports::Target;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

pub(crate) use freezeframe_contract::Check;

fn check<F: Into<String>>(name: &str, result: Result<String, (String, F)>) -> Check {
    match result {
        Ok(detail) => Check {
            name: name.into(),
            ok: true,
            detail,
            fix: String::new(),
        },
        Err((detail, fix)) => Check {
            name: name.into(),
            ok: false,
            detail,
            fix: fix.into(),
        },
    }
}

/// Runs every check. What reads the machine's files, runs mkfs or mounts runs off the async
/// workers ([`blocking`](crate::blocking)): the service answers other calls meanwhile.
pub(crate) async fn run(settings: &Settings) -> Vec<Check> {
    let settings = Arc::new(settings.clone());
    let local = Arc::clone(&settings);
    let (mut checks, targets) = crate::blocking::run(move || {
        let plan = crate::job::freeze_plan(&local);
        let checks = vec![runtime_dir(&local), filesystems(&plan)];
        (checks, plan.map(|p| p.targets).unwrap_or_default())
    })
    .await;
    checks.extend(provider(&settings, &targets).await);
    checks.extend(quiescers(&settings, &targets).await);
    checks.extend(
        crate::blocking::run(move || {
            vec![
                scheduled_drills(&settings),
                metrics(&settings),
                strategy(&settings),
                check(
                    "freeze self-test",
                    freeze_self_test(&settings.runtime_dir).map_err(|e| (e.to_string(), e.fix())),
                ),
            ]
        })
        .await,
    );
    checks
}

fn runtime_dir(settings: &Settings) -> Check {
    check(
        "runtime directory",
        RuntimeDir::open(&settings.runtime_dir)
            .map(|_| format!("{} is usable", settings.runtime_dir.display()))
            .map_err(|e| {
                (
                    e.to_string(),
                    "set `agent.runtime_dir` to a writable folder on tmpfs",
                )
            }),
    )
}

fn filesystems(plan: &Result<Plan, PlanFromSystemError>) -> Check {
    let list = |paths: Vec<String>| paths.join(", ");
    check(
        "filesystems",
        match plan {
            Ok(plan) if !plan.targets.is_empty() => Ok(format!(
                "would freeze {}; skips {}",
                list(
                    plan.targets
                        .iter()
                        .map(|t| t.mountpoint.display().to_string())
                        .collect()
                ),
                if plan.skipped.is_empty() {
                    "nothing".to_string()
                } else {
                    list(
                        plan.skipped
                            .iter()
                            .map(|s| format!("{} ({})", s.mountpoint.display(), s.reason))
                            .collect(),
                    )
                }
            )),
            Ok(_) => Err((
                "no filesystem would be frozen".into(),
                "list the mountpoints to freeze in `freeze.mountpoints`",
            )),
            Err(e) => Err((e.to_string(), "fix `freeze.mountpoints` and `freeze.exclude`")),
        },
    )
}

/// The provider's own preflight, as a snapshot would run it; and, when what it learned caps
/// what a snapshot may claim (a restore drill found the platform reading disks after the thaw),
/// that too, loudly.
async fn provider(settings: &Settings, targets: &[Target]) -> Vec<Check> {
    let mut provider = crate::job::provider(settings);
    let provider = provider.port();
    let mut checks = vec![check(
        &format!("provider {}", provider.name()),
        provider
            .preflight("freezeframe-doctor", targets)
            .await
            .map(|()| "every preflight check passed: ready to request a snapshot".to_string())
            .map_err(|e| {
                (
                    crate::errors::error_chain(&e),
                    e.fix().unwrap_or("see the error").to_string(),
                )
            }),
    )];
    if let Some(limit) = provider.claim_limit() {
        checks.push(check(
            "snapshot point",
            Err((
                limit.why,
                "set `digitalocean.thaw_after = \"completed\"`, or run `freezeframe verify` on a \
                 newer snapshot if the platform has changed",
            )),
        ));
    }
    checks
}

/// The opt-in restore drill this Droplet runs on itself: off, or on with its token and ssh key
/// usable, said with what that token would give whoever took over this Droplet.
/// How this Droplet is snapshotted; offline says who takes the snapshots, and what of this
/// machine they leave aside.
fn strategy(settings: &Settings) -> Check {
    let detail = match settings.snapshot.strategy {
        crate::config::Strategy::Live => {
            "live: this agent quiesces, freezes for about one API round trip and snapshots".to_string()
        }
        crate::config::Strategy::Offline => format!(
            "offline: `freezeframe snapshot --offline` from another machine shuts this Droplet \
             down, snapshots it while off and powers it on again; this agent takes no snapshot \
             itself (disable freezeframe-snapshot.timer here; its quiescers ({}) are not needed: \
             the shutdown stops every service)",
            settings.quiesce.quiescers.len()
        ),
    };
    check::<&str>("snapshot strategy", Ok(detail))
}

/// Where the metrics go: node_exporter's textfile folder, `/metrics`, or nowhere. A textfile
/// folder that does not exist is no failure (node_exporter is not installed): said, with how.
fn metrics(settings: &Settings) -> Check {
    let metrics = &settings.metrics;
    let mut ways = Vec::new();
    if let Some(dir) = &metrics.textfile_dir {
        if dir.is_dir() {
            ways.push(format!(
                "written to {} after each run's thaw (node_exporter's textfile collector)",
                dir.join(crate::metrics::TEXTFILE).display()
            ));
        } else if dir.exists() {
            return check(
                "metrics",
                Err((
                    format!("metrics.textfile_dir {} is not a folder", dir.display()),
                    "set `metrics.textfile_dir` to node_exporter's textfile collector folder, or to \"\" for none",
                )),
            );
        } else {
            ways.push(format!(
                "not written: {} does not exist (install prometheus-node-exporter, or set \
                 `metrics.textfile_dir`)",
                dir.display()
            ));
        }
    }
    if let Some(address) = metrics.listen {
        ways.push(format!(
            "served at http://{address}/metrics by `freezeframe-agent run`"
        ));
    }
    if ways.is_empty() {
        ways.push("off: no textfile folder and no listen address (`[metrics]`)".into());
    }
    check::<&str>("metrics", Ok(ways.join("; ")))
}

fn scheduled_drills(settings: &Settings) -> Check {
    let verify = &settings.verify;
    let Some(every) = verify.schedule else {
        return check::<&str>(
            "scheduled restore drills",
            Ok(
                "off: drills run from an operator's machine (`freezeframe verify SNAPSHOT`), and \
                no token here can create or destroy Droplets"
                    .into(),
            ),
        );
    };
    let usable = crate::secret::read_private_file(&verify.token_file)
        .map_err(|e| format!("the drill's token (verify.token_file): {e}"))
        .and_then(|_| {
            crate::secret::read_private_file(&verify.ssh_identity)
                .map_err(|e| format!("the drill's ssh key (verify.ssh_identity): {e}"))
        });
    check(
        "scheduled restore drills",
        match usable {
            Ok(_) => Ok(format!(
                "on, at most every {}, after the timer's snapshot. Its token ({}) can create and \
                 destroy every Droplet and volume of the account: whoever takes over this \
                 Droplet can too. Keep it only where that is acceptable; otherwise set \
                 verify.schedule = \"off\" and run drills from your own machine",
                humantime::format_duration(every),
                verify.token_file.display()
            )),
            Err(problem) => Err((
                problem,
                "put a token with the drill's scopes in verify.token_file and a private ssh key \
                 whose public half is in /root/.ssh/authorized_keys in verify.ssh_identity (both \
                 mode 600), or set verify.schedule = \"off\"",
            )),
        },
    )
}

/// Databases found that nothing quiesces, and each quiescer's own check.
async fn quiescers(settings: &Settings, targets: &[Target]) -> Vec<Check> {
    let bus = crate::dbus::system_bus().await.ok();
    let quiesce = crate::job::quiesce_plan(settings, bus.as_ref()).await;
    let mut checks = Vec::new();
    for why in quiesce.unquiesced() {
        checks.push(check(
            "database detection",
            Err((
                why,
                "add a [[quiescer]] for it (kind = \"systemd\" works for any unit), or a hook script",
            )),
        ));
    }
    for mut quiescer in quiesce.quiescers() {
        let name = format!("quiescer {}", quiescer.name());
        checks.push(check(
            &name,
            quiescer
                .check(targets)
                .await
                .map(|()| "reachable, and its data is on the filesystems to freeze".to_string())
                .map_err(|e| {
                    (
                        crate::errors::error_chain(&e),
                        "see the error; `freezeframe plan` shows what runs",
                    )
                }),
        ));
    }
    checks
}

/// Why the freeze self-test failed: each step's failure has its own fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SelfTestError {
    /// The scratch folder or image could not be made.
    #[error("cannot create {}: {source}", path.display())]
    Scratch {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `mkfs.ext4` is missing.
    #[error("cannot run mkfs.ext4: {0}")]
    NoMkfs(#[source] std::io::Error),
    /// `mkfs.ext4` ran and failed.
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
    /// The image could not be attached or mounted.
    #[error(transparent)]
    Mount(#[from] crate::loop_mount::LoopMountError),
    /// The mounted scratch filesystem could not be opened.
    #[error("cannot open the scratch mount: {0}")]
    Open(#[source] nix::Error),
    /// FIFREEZE itself failed.
    #[error("FIFREEZE failed: {0}")]
    Freeze(#[source] nix::Error),
    /// FITHAW failed.
    #[error("FITHAW failed: {0}")]
    Thaw(#[source] nix::Error),
}

impl SelfTestError {
    /// What to do about it.
    fn fix(&self) -> &'static str {
        match self {
            SelfTestError::NoMkfs(_) => "install e2fsprogs (it provides mkfs.ext4)",
            SelfTestError::Scratch { .. } => {
                "check that `runtime_dir` is on a writable filesystem with 32 MiB free"
            }
            _ => {
                "the agent needs root (CAP_SYS_ADMIN) and a kernel with FIFREEZE; in a \
                 container, run it on the host"
            }
        }
    }
}

/// Freezes and thaws a 32 MiB ext4 loop filesystem made in `dir` for the purpose, then removes
/// it: proves FIFREEZE works here without touching a filesystem anyone uses.
pub(crate) fn freeze_self_test(dir: &Path) -> Result<String, SelfTestError> {
    let work = dir.join("doctor");
    let image = work.join("scratch.img");
    let scratch = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SelfTestError::Scratch { path, source }
    };
    let result = (|| {
        std::fs::create_dir_all(&work).map_err(scratch(&work))?;
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(32 << 20))
            .map_err(scratch(&image))?;
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .output()
            .map_err(SelfTestError::NoMkfs)?;
        if !out.status.success() {
            return Err(SelfTestError::Mkfs(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let mounted = LoopMount::attach(&image, &work.join("mnt"), Attach::default())?;
        let fd = sys::open_mountpoint(mounted.mountpoint()).map_err(SelfTestError::Open)?;
        sys::freeze(&fd).map_err(SelfTestError::Freeze)?;
        sys::thaw(&fd).map_err(SelfTestError::Thaw)?;
        Ok("froze and thawed a scratch ext4 loop filesystem".to_string())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder that cannot be made fails as such, with its own fix (not the one for a
    /// kernel or privileges that cannot freeze), and leaves nothing behind.
    #[test]
    fn a_self_test_without_a_scratch_folder_says_where_to_look() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, "").unwrap();
        let err = freeze_self_test(&file).unwrap_err();
        assert!(
            matches!(&err, SelfTestError::Scratch { path, .. } if path == &file.join("doctor")),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot create"), "{err}");
        assert!(err.fix().contains("runtime_dir"), "{}", err.fix());
        assert!(std::fs::metadata(&file).unwrap().is_file());
    }
}
