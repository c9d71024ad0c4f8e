//! Which filesystems to freeze, which to skip and why, and in what order. Pure: the little it
//! needs from the host (loop backing files, device numbers) comes through [`HostLookup`].

use crate::kernel::mountinfo::Mount;
use crate::transaction::ports::{DevNum, SkipReason, Skipped, Target};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What the planner asks of the host.
pub trait HostLookup {
    /// The file behind `mount`'s block device, if that device is a loop device.
    fn loop_backing_file(&self, mount: &Mount) -> Option<PathBuf>;
    /// `st_dev` of the file at `path`.
    fn device_of(&self, path: &Path) -> Option<DevNum>;
}

/// The result of planning: targets in freeze order (thaw is the exact reverse), and skips.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What to freeze, in freeze order.
    pub targets: Vec<Target>,
    /// What is not frozen, and why.
    pub skipped: Vec<Skipped>,
}

/// What the configuration asks for.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    /// Explicit mountpoints, or `None` for every eligible local filesystem.
    pub mountpoints: Option<&'a [PathBuf]>,
    /// Mountpoints never frozen.
    pub exclude: &'a [PathBuf],
}

/// Why no plan can be made from the mounts and the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A path in `freeze.mountpoints` is not a mountpoint.
    #[error("{path} is not a mountpoint (it is inside {within}); name the mountpoint itself in `freeze.mountpoints`")]
    NotAMountpoint {
        /// The path as configured.
        path: PathBuf,
        /// The mountpoint it lies under.
        within: PathBuf,
    },
    /// A path in `freeze.mountpoints` is a mount that can never be frozen.
    #[error("{path} cannot be frozen: {reason}; remove it from `freeze.mountpoints`")]
    Ineligible {
        /// The path as configured.
        path: PathBuf,
        /// Why it cannot be frozen.
        reason: SkipReason,
    },
    /// Loop filesystems whose images lie on each other: no order freezes them safely.
    #[error("the loop devices between {0:?} depend on each other in a cycle; freeze them explicitly in separate runs")]
    Cycle(Vec<PathBuf>),
    #[error(
        "mountinfo lists device {dev} as two different filesystems ({first} and {second}); refusing \
         to guess which to freeze"
    )]
    /// The mount table contradicts itself.
    Inconsistent {
        /// The device number, `major:minor`.
        dev: String,
        /// One mountpoint listed for it.
        first: PathBuf,
        /// Another, of a different filesystem.
        second: PathBuf,
    },
}

const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "devpts",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "fusectl",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "nfsd",
    "binder",
    "zonefs",
];
const NETWORK: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "ocfs2",
    "gfs2",
    "lustre",
    "beegfs",
    "virtiofs",
];
const READ_ONLY_TYPES: &[&str] = &["squashfs", "erofs", "iso9660", "udf", "cramfs"];

/// Why `mount` can never be frozen, or `None` if it can.
fn ineligible(mount: &Mount) -> Option<SkipReason> {
    let t = mount.fstype.as_str();
    let reason = if PSEUDO.contains(&t) {
        SkipReason::Pseudo
    } else if matches!(t, "tmpfs" | "ramfs") {
        SkipReason::MemoryBacked
    } else if t == "overlay" {
        SkipReason::Overlay
    } else if t == "fuse" || t.starts_with("fuse.") || t == "fuseblk" {
        SkipReason::Fuse
    } else if NETWORK.contains(&t) {
        SkipReason::Network
    } else if READ_ONLY_TYPES.contains(&t) || mount.superblock_read_only() {
        SkipReason::ReadOnly
    } else if mount.dev.major == 0 && t != "btrfs" {
        // btrfs reports an anonymous device number even though it sits on a block device.
        SkipReason::NoBlockDevice
    } else {
        return None;
    };
    Some(reason)
}

/// Mounts of one superblock share this key. btrfs gives each filesystem an anonymous device
/// number, so its source device identifies it instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SuperblockKey {
    Dev(DevNum),
    Source(String),
}

fn superblock_key(mount: &Mount) -> SuperblockKey {
    if mount.fstype == "btrfs" {
        SuperblockKey::Source(mount.source.clone())
    } else {
        SuperblockKey::Dev(mount.dev)
    }
}

fn depth(path: &Path) -> usize {
    path.components().count()
}

/// Decides targets, skips and order.
pub fn plan(mounts: &[Mount], selection: Selection<'_>, host: &dyn HostLookup) -> Result<Plan, PlanError> {
    let mut planner = Planner {
        skipped: Vec::new(),
        discovering: selection.mountpoints.is_none(),
    };
    let visible = planner.visible(mounts);
    let groups = group_by_superblock(&planner.eligible(&visible))?;
    let chosen = match selection.mountpoints {
        Some(requested) => planner.choose_requested(requested, &visible, &groups)?,
        None => planner.choose_discovered(selection.exclude, &groups),
    };
    let targets = planner.targets(&chosen, &groups);
    let must_precede = loop_dependencies(&chosen, &groups, &visible, host);
    let targets = freeze_order(targets, &must_precede)?;
    Ok(Plan {
        targets,
        skipped: planner.skipped,
    })
}

/// Mounts of one filesystem, in mountinfo order.
type Group<'m> = (SuperblockKey, Vec<&'m Mount>);

/// A chosen filesystem: its group, and the mount it is reached through.
type Chosen<'m> = (usize, &'m Mount);

/// What a plan collects as it goes: the mounts it skips, and why.
struct Planner {
    skipped: Vec<Skipped>,
    /// No mountpoints were named: every eligible filesystem is a target, and every skip is
    /// worth a line in the plan.
    discovering: bool,
}

impl Planner {
    fn skip(&mut self, m: &Mount, reason: SkipReason) {
        self.skipped.push(Skipped {
            mountpoint: m.mountpoint.clone(),
            fstype: m.fstype.clone(),
            reason,
        })
    }

    /// The mounts reachable by path: a path mounted over is reached only through its last mount.
    fn visible<'m>(&mut self, mounts: &'m [Mount]) -> Vec<&'m Mount> {
        let mut visible = Vec::new();
        for (i, m) in mounts.iter().enumerate() {
            let hidden = mounts[i + 1..]
                .iter()
                .any(|later| later.mountpoint == m.mountpoint);
            // Only a hidden filesystem with data is worth a line: a tmpfs under a tmpfs (as
            // /dev/shm and /dev/pts often are) would list one path twice.
            if hidden && self.discovering && ineligible(m).is_none() {
                self.skip(m, SkipReason::Hidden);
            } else if !hidden {
                visible.push(m);
            }
        }
        visible
    }

    /// The visible mounts that can be frozen; the others are skipped with their reason.
    fn eligible<'m>(&mut self, visible: &[&'m Mount]) -> Vec<&'m Mount> {
        let mut eligible = Vec::new();
        for m in visible {
            match ineligible(m) {
                Some(reason) if self.discovering => self.skip(m, reason),
                Some(_) => {}
                None => eligible.push(*m),
            }
        }
        eligible
    }

    /// The filesystems of the mountpoints named in `freeze.mountpoints`, in that order.
    fn choose_requested<'m>(
        &mut self,
        requested: &[PathBuf],
        visible: &[&'m Mount],
        groups: &[Group<'m>],
    ) -> Result<Vec<Chosen<'m>>, PlanError> {
        let mut chosen: Vec<Chosen<'m>> = Vec::new();
        for path in requested {
            let Some(mount) = visible.iter().find(|m| &m.mountpoint == path) else {
                let within = visible
                    .iter()
                    .filter(|m| path.starts_with(&m.mountpoint))
                    .max_by_key(|m| depth(&m.mountpoint))
                    .map_or_else(|| PathBuf::from("/"), |m| m.mountpoint.clone());
                return Err(PlanError::NotAMountpoint {
                    path: path.clone(),
                    within,
                });
            };
            if let Some(reason) = ineligible(mount) {
                return Err(PlanError::Ineligible {
                    path: path.clone(),
                    reason,
                });
            }
            let key = superblock_key(mount);
            let group = groups
                .iter()
                .position(|(k, _)| *k == key)
                .expect("eligible mounts are grouped");
            match chosen.iter().find(|(g, _)| *g == group) {
                Some((_, first)) => self.skip(mount, SkipReason::SameFilesystemAs(first.mountpoint.clone())),
                None => chosen.push((group, *mount)),
            }
        }
        Ok(chosen)
    }

    /// Every filesystem not excluded, each reached through its whole-filesystem mount nearest
    /// the root.
    fn choose_discovered<'m>(&mut self, exclude: &[PathBuf], groups: &[Group<'m>]) -> Vec<Chosen<'m>> {
        let mut chosen = Vec::new();
        for (group, (_, members)) in groups.iter().enumerate() {
            if members.iter().any(|m| exclude.contains(&m.mountpoint)) {
                for m in members {
                    self.skip(m, SkipReason::Excluded);
                }
                continue;
            }
            let rep = members
                .iter()
                .min_by_key(|m| (m.root != Path::new("/"), depth(&m.mountpoint)))
                .expect("groups are never empty");
            chosen.push((group, *rep));
        }
        chosen
    }

    /// The chosen filesystems as targets, with their other mounts.
    fn targets(&mut self, chosen: &[Chosen<'_>], groups: &[Group<'_>]) -> Vec<Target> {
        let mut targets = Vec::with_capacity(chosen.len());
        for (group, rep) in chosen {
            let others: Vec<&Mount> = groups[*group]
                .1
                .iter()
                .copied()
                .filter(|m| m.mount_id != rep.mount_id)
                .collect();
            if self.discovering {
                for m in &others {
                    self.skip(m, SkipReason::SameFilesystemAs(rep.mountpoint.clone()));
                }
            }
            targets.push(Target {
                mountpoint: rep.mountpoint.clone(),
                mount_id: rep.mount_id,
                dev: rep.dev,
                fstype: rep.fstype.clone(),
                source: rep.source.clone(),
                also_mounted_at: others.iter().map(|m| m.mountpoint.clone()).collect(),
            });
        }
        targets
    }
}

/// Eligible mounts grouped by superblock, in mountinfo order.
fn group_by_superblock<'m>(eligible: &[&'m Mount]) -> Result<Vec<Group<'m>>, PlanError> {
    let mut groups: Vec<Group<'m>> = Vec::new();
    for m in eligible {
        let key = superblock_key(m);
        // One device number is one filesystem: a second key for it means the table is wrong,
        // and freezing both would freeze one superblock twice.
        let clash = groups
            .iter()
            .filter(|(k, _)| *k != key)
            .find_map(|(_, members)| members.iter().find(|x| x.dev == m.dev));
        if let Some(other) = clash {
            return Err(PlanError::Inconsistent {
                dev: format!("{}:{}", m.dev.major, m.dev.minor),
                first: other.mountpoint.clone(),
                second: m.mountpoint.clone(),
            });
        }
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(m),
            None => groups.push((key, vec![m])),
        }
    }
    Ok(groups)
}

/// `must_precede[i]` lists the targets that must be frozen after target `i`: a filesystem on a
/// loop device flushes into its backing file when frozen, so it goes before the filesystem
/// holding that file, or its freeze would wait forever on a frozen backing store.
fn loop_dependencies(
    chosen: &[Chosen<'_>],
    groups: &[Group<'_>],
    visible: &[&Mount],
    host: &dyn HostLookup,
) -> Vec<Vec<usize>> {
    let mut must_precede: Vec<Vec<usize>> = vec![Vec::new(); chosen.len()];
    for (i, (_, rep)) in chosen.iter().enumerate() {
        let Some(file) = host.loop_backing_file(rep) else {
            continue;
        };
        let holder = host
            .device_of(&file)
            .and_then(|dev| visible.iter().find(|m| m.dev == dev))
            .or_else(|| {
                visible
                    .iter()
                    .filter(|m| file.starts_with(&m.mountpoint))
                    .max_by_key(|m| depth(&m.mountpoint))
            });
        let Some(holder) = holder else { continue };
        let key = superblock_key(holder);
        if let Some(j) = chosen.iter().position(|(g, _)| groups[*g].0 == key) {
            if j != i && !must_precede[i].contains(&j) {
                must_precede[i].push(j);
            }
        }
    }
    must_precede
}

/// The targets in freeze order (Kahn's algorithm); among those ready, the deepest mountpoint
/// first, so `/` comes last.
fn freeze_order(targets: Vec<Target>, must_precede: &[Vec<usize>]) -> Result<Vec<Target>, PlanError> {
    let mut blocked_by: Vec<usize> = vec![0; targets.len()];
    for &j in must_precede.iter().flatten() {
        blocked_by[j] += 1;
    }
    let mut order = Vec::with_capacity(targets.len());
    let mut done = vec![false; targets.len()];
    while order.len() < targets.len() {
        let next = (0..targets.len())
            .filter(|&i| !done[i] && blocked_by[i] == 0)
            .min_by(|&a, &b| {
                let (pa, pb) = (&targets[a].mountpoint, &targets[b].mountpoint);
                depth(pb).cmp(&depth(pa)).then_with(|| pa.cmp(pb))
            });
        let Some(i) = next else {
            let stuck = (0..targets.len())
                .filter(|&i| !done[i])
                .map(|i| targets[i].mountpoint.clone());
            return Err(PlanError::Cycle(stuck.collect()));
        };
        done[i] = true;
        for &j in &must_precede[i] {
            blocked_by[j] -= 1;
        }
        order.push(i);
    }
    let mut by_index: HashMap<usize, Target> = targets.into_iter().enumerate().collect();
    Ok(order.into_iter().filter_map(|i| by_index.remove(&i)).collect())
}

#[cfg(test)]
mod tests;
