//! `freezeframe-agent thaw`: the emergency exit. Thaws what the record in the runtime directory
//! lists (left by an agent and guard that both died), then runs the resumes a dead agent owed
//! (units to thaw or start, hooks to `thaw`), through [`runtime::recover`]; or thaws the
//! mountpoints named.

use super::{Exit, Failure};
use crate::config::{DEFAULT_HOOK_TIMEOUT, DEFAULT_RUNTIME_DIR};
use crate::guard::record;
use crate::kernel::{mountinfo, sys};
use crate::runtime::{self, Recovered};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub(crate) struct ThawArgs {
    /// Runtime directory holding the record [default: `agent.runtime_dir` from the
    /// configuration, or /run/freezeframe if it cannot be read]
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Print what was done as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// Thaw these mountpoints instead of what the record lists
    mountpoints: Vec<PathBuf>,
}

pub(crate) fn run(config: Option<&Path>, args: &ThawArgs) -> Result<Exit, Failure> {
    let (recovered, place) = if args.mountpoints.is_empty() {
        recover(config, args.runtime_dir.as_deref())?
    } else {
        // Every path is checked before anything is thawed: a typo thaws nothing.
        let opened = args
            .mountpoints
            .iter()
            .map(|mp| open_mountpoint(mp).map(|fd| (mp.clone(), fd)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Failure::usage(anyhow::anyhow!(
                    "{e}; name the mountpoint of a frozen filesystem (as findmnt lists it), or none \
                     to thaw what the record in the runtime directory lists; nothing was thawed"
                ))
            })?;
        let filesystems = opened
            .into_iter()
            .map(|(mp, fd)| crate::runtime::recovered_filesystem((mp, record::thaw_one(&fd))))
            .collect();
        let named = Recovered {
            filesystems,
            resumes: Vec::new(),
        };
        (named, String::new())
    };
    if args.json {
        crate::stdout::line(&serde_json::to_string_pretty(&recovered)?);
    } else {
        crate::stdout::line(recovered.text(&place).trim_end());
    }
    Ok(if recovered.failed() {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// Why a path named to `thaw` is refused.
#[derive(Debug, thiserror::Error)]
enum NotAMountpoint {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is not a directory, so not a mountpoint", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "{} is not a mountpoint: it is inside the filesystem mounted at {}",
        .path.display(),
        .holder.display()
    )]
    Inside { path: PathBuf, holder: PathBuf },
    #[error("cannot open {}: {problem}", .path.display())]
    Unreadable { path: PathBuf, problem: String },
}

/// Opens `path`, which must be where a filesystem is mounted (FITHAW would thaw whatever
/// filesystem holds any path; naming a folder inside one is a mistake to point out).
fn open_mountpoint(path: &Path) -> Result<std::os::fd::OwnedFd, NotAMountpoint> {
    let unreadable = |problem: String| NotAMountpoint::Unreadable {
        path: path.to_path_buf(),
        problem,
    };
    let fd = match sys::open_mountpoint(path) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Err(NotAMountpoint::Missing(path.to_path_buf())),
        Err(nix::Error::ENOTDIR) => return Err(NotAMountpoint::NotADirectory(path.to_path_buf())),
        Err(e) => return Err(unreadable(e.desc().to_string())),
    };
    // The mount the opened folder belongs to, and where that mount is: reads only, which a
    // frozen filesystem answers.
    let mount_id = sys::mount_id_of(&fd).map_err(|e| unreadable(e.to_string()))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| unreadable(e.to_string()))?;
    let mounts = mountinfo::parse(&table).map_err(|e| unreadable(e.to_string()))?;
    let holder = mounts
        .iter()
        .find(|m| m.mount_id == mount_id)
        .map(|m| m.mountpoint.clone())
        .ok_or_else(|| unreadable("its mount is not in /proc/self/mountinfo".into()))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| unreadable(e.to_string()))?;
    if canonical != holder {
        return Err(NotAMountpoint::Inside {
            path: path.to_path_buf(),
            holder,
        });
    }
    Ok(fd)
}

/// Recovers the runtime directory the arguments or the configuration name.
fn recover(config: Option<&Path>, runtime_dir: Option<&Path>) -> Result<(Recovered, String), Failure> {
    // An emergency thaw must work with a broken configuration too.
    let settings = super::load_settings(config)
        .map_err(|e| tracing::warn!("{e}; using defaults ({DEFAULT_RUNTIME_DIR})"))
        .ok();
    let dir = match (runtime_dir, &settings) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(settings)) => settings.runtime_dir.clone(),
        (None, None) => DEFAULT_RUNTIME_DIR.into(),
    };
    let hook_timeout = settings
        .as_ref()
        .map_or(DEFAULT_HOOK_TIMEOUT, |s| s.quiesce.hook_timeout);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let recovered = tokio
        .block_on(runtime::recover(&dir, None, hook_timeout))
        .map_err(|e| anyhow::anyhow!("cannot recover {}: {e}", dir.display()))?;
    // The guard's notes of a dead agent, counted now: the runtime directory goes at reboot.
    if let Some(settings) = settings.as_ref().filter(|s| s.runtime_dir == dir) {
        let history = &settings.history;
        if crate::history::record(&history.file, history.keep, &dir, None, &[]) {
            tokio.block_on(crate::metrics::publish_between_runs(settings));
        }
    }
    Ok((recovered, dir.display().to_string()))
}
