//! `freezeframe-agent verify` on a machine restored from a snapshot (a restore drill's
//! Droplet): the probe's markers on its mounted filesystems say when the platform read its
//! disk; the databases its configuration quiesces, which its boot started from the restored
//! disk, are checked as they run (with those the snapshot's marker records it quiesced, found
//! through systemd or configured); and each restored volume named with `--volume` (attached, not
//! mounted) is checked as an image, databases and all. The boot has replayed (or discarded)
//! the journals, so their state tells nothing here; the markers do, and what each ext4 log
//! still holds (the `after` marker's creation). Each mounted filesystem's health is the
//! kernel's record of its errors (`health.rs`): one with errors fails the verdict.

use super::evidence::{journal_holds_after, read_markers, Evidence};
use super::{
    mariadb, postgres, redis, verify_any, DatabaseCheck, DatabaseKind, JournalState, MachineVerification,
    MountedFilesystem, VerifyError, VolumeVerification,
};
use crate::config::QuiescerSettings;
use crate::config::{MariadbLogin, RedisEndpoint, DEFAULT_LOCK_WAIT_TIMEOUT, DEFAULT_QUIESCER_TIMEOUT};
use crate::kernel::mountinfo;
use crate::transaction::ports::{DatabaseEndpoint, MarkerRecord};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Checks this machine: the filesystems mounted at `mountpoints` (those of them that are
/// mounted; every ext4, XFS and btrfs mount when `None`), the running databases that
/// `quiescers` name (each given up to `wait` to come up: the boot may still be recovering
/// them), and each `(name, device)` volume as an image, with `scratch` for the work.
pub(crate) fn verify_machine(
    mountpoints: Option<&[PathBuf]>,
    quiescers: &[QuiescerSettings],
    volumes: &[(String, PathBuf)],
    wait: Duration,
    scratch: &Path,
) -> Result<MachineVerification, VerifyError> {
    // The database clients run as their servers' users, and read scripts from inside.
    std::fs::set_permissions(scratch, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .map_err(|e| VerifyError::Tool(format!("cannot open {}: {e}", scratch.display())))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| VerifyError::Tool(format!("cannot read /proc/self/mountinfo: {e}")))?;
    let mounts = mountinfo::parse(&table).map_err(|e| VerifyError::Tool(e.to_string()))?;
    let mut found = Vec::new();
    let mut record = None;
    let mut filesystems = Vec::new();
    let mut after_logged_anywhere = false;
    let mut health_reasons = Vec::new();
    for mount in mounts.iter().filter(|m| match mountpoints {
        Some(list) => list.contains(&m.mountpoint),
        None => matches!(m.fstype.as_str(), "ext4" | "xfs" | "btrfs"),
    }) {
        // A mountpoint covered by a later mount is not what this machine sees there.
        if mounts
            .iter()
            .any(|later| later.mountpoint == mount.mountpoint && later.parent_id == mount.mount_id)
        {
            continue;
        }
        // Resolved inside the filesystem, as on an image.
        let markers = match super::inside::Root::open(&mount.mountpoint) {
            Ok(root) => read_markers(&root),
            Err(_) => super::evidence::Markers {
                found: Vec::new(),
                record: None,
                boot_id: None,
            },
        };
        let snapshot = markers.found.first().map(|(name, _)| name.as_str());
        super::live::refuse_own_boot(markers.boot_id.as_deref(), snapshot, &mount.mountpoint)?;
        record = record.or(markers.record);
        // The boot replayed (or discarded) the journal, but the log still holds what it logged.
        let after_logged = mount.fstype == "ext4"
            && journal_holds_after(
                std::process::Command::new("debugfs"),
                Path::new(&mount.source),
                &markers.found,
            );
        after_logged_anywhere |= after_logged;
        // What the kernel recorded against it: the boot mounted it, and any error since.
        let health = super::health::health(mount, Path::new("/sys"));
        for problem in health.iter().flat_map(|h| &h.problems) {
            health_reasons.push(format!("{}: {problem}", mount.mountpoint.display()));
        }
        filesystems.push(MountedFilesystem {
            mountpoint: mount.mountpoint.clone(),
            fstype: mount.fstype.clone(),
            markers: markers
                .found
                .iter()
                .map(|(name, moment)| format!("{name}.{}", moment.as_str()))
                .collect(),
            after_logged,
            health,
        });
        found.extend(markers.found);
    }
    let claimed = record.as_ref().map(|r| r.consistency);
    // The boot replayed (or discarded) the journals: their state tells nothing here.
    let evidence = Evidence {
        markers: &found,
        journal: JournalState::NotTold,
        after_logged: after_logged_anywhere,
    };
    let probe = evidence.verdict();
    let mut reasons: Vec<String> = evidence.reason(claimed).into_iter().collect();
    reasons.extend(health_reasons);
    let mut checked = Vec::new();
    for (n, (name, device)) in volumes.iter().enumerate() {
        let dir = scratch.join(format!("volume-{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| VerifyError::Tool(format!("cannot create {}: {e}", dir.display())))?;
        let found = verify_any(device, &dir)?;
        for reason in found.reasons() {
            reasons.push(format!("volume {name}: {reason}"));
        }
        checked.push(VolumeVerification {
            name: name.clone(),
            found,
        });
    }
    // After the volumes: a database whose data is on one of them does not run here.
    let on_volumes: Vec<DatabaseKind> = checked
        .iter()
        .flat_map(|v| v.found.databases().into_iter().map(|d| d.kind))
        .collect();
    let expected = with_recorded(quiescers, record.as_ref());
    let databases = running_databases(&expected, &on_volumes, wait, scratch);
    for database in databases.iter().filter(|d| !d.ok) {
        reasons.push(format!(
            "{}: {}",
            database.kind.label(),
            database.problems.join("; ")
        ));
    }
    Ok(MachineVerification {
        probe,
        claimed,
        filesystems,
        databases,
        volumes: checked,
        verified: reasons.is_empty(),
        reasons,
    })
}

/// The configured quiescers, and each database the snapshot's marker records as quiesced that
/// none of them reaches (one found through systemd, or configured then and not now): the
/// restored machine must run the databases the original did.
fn with_recorded(quiescers: &[QuiescerSettings], record: Option<&MarkerRecord>) -> Vec<QuiescerSettings> {
    let mut all = quiescers.to_vec();
    for endpoint in record.map(|r| r.databases.as_slice()).unwrap_or_default() {
        let recorded = settings_of(endpoint);
        if !all.iter().any(|q| address_of(q) == address_of(&recorded)) {
            all.push(recorded);
        }
    }
    all
}

/// A recorded database as the quiescer settings that reach it (the defaults for the rest).
fn settings_of(endpoint: &DatabaseEndpoint) -> QuiescerSettings {
    match endpoint.clone() {
        DatabaseEndpoint::Postgresql {
            socket_dir,
            port,
            os_user,
        } => QuiescerSettings::Postgresql {
            socket_dir,
            port,
            os_user,
            checkpoint: true,
            timeout: DEFAULT_QUIESCER_TIMEOUT,
        },
        DatabaseEndpoint::Mariadb {
            socket,
            user,
            password_file,
        } => QuiescerSettings::Mariadb {
            socket,
            login: MariadbLogin { user, password_file },
            lock_wait_timeout: DEFAULT_LOCK_WAIT_TIMEOUT,
            timeout: DEFAULT_QUIESCER_TIMEOUT,
        },
        DatabaseEndpoint::Redis {
            socket,
            address,
            password_file,
        } => QuiescerSettings::Redis {
            endpoint: match (socket, address) {
                (Some(socket), _) => RedisEndpoint::Socket(socket),
                (None, address) => RedisEndpoint::Tcp(address.unwrap_or_default()),
            },
            password_file,
            timeout: DEFAULT_QUIESCER_TIMEOUT,
        },
    }
}

/// Where a quiescer reaches its database: a socket's path or a TCP address.
fn address_of(quiescer: &QuiescerSettings) -> Option<String> {
    match quiescer {
        QuiescerSettings::Redis {
            endpoint: RedisEndpoint::Tcp(address),
            ..
        } => Some(address.clone()),
        other => socket_of(other).map(|(_, socket)| socket.display().to_string()),
    }
}

/// Each database a quiescer names, checked as it runs. One whose socket is not there while a
/// restored volume holds a database of its kind is that volume's (volumes are attached after
/// the boot, so it cannot run here): checked there, as an image.
fn running_databases(
    quiescers: &[QuiescerSettings],
    on_volumes: &[DatabaseKind],
    wait: Duration,
    scratch: &Path,
) -> Vec<DatabaseCheck> {
    quiescers
        .iter()
        .enumerate()
        .filter_map(|(n, quiescer)| {
            let check = |kind| DatabaseCheck::new(kind, Path::new(""));
            if let Some((kind, socket)) = socket_of(quiescer) {
                if !socket.exists() && on_volumes.contains(&kind) {
                    let mut elsewhere = check(kind);
                    elsewhere.path = socket;
                    elsewhere.checks.push(
                        "not running on this machine: its data is on a restored volume, checked there".into(),
                    );
                    return Some(elsewhere.finish());
                }
            }
            let checked = match quiescer {
                QuiescerSettings::Postgresql {
                    socket_dir,
                    port,
                    os_user,
                    ..
                } => postgres::check_running(
                    check(DatabaseKind::Postgresql),
                    socket_dir,
                    *port,
                    os_user,
                    wait,
                    &scratch.join(format!("running-{n}")),
                ),
                QuiescerSettings::Mariadb { socket, login, .. } => {
                    mariadb::check_running(check(DatabaseKind::Mariadb), socket, login, wait)
                }
                QuiescerSettings::Redis {
                    endpoint,
                    password_file,
                    ..
                } => redis::check_running(
                    check(DatabaseKind::Redis),
                    endpoint,
                    password_file.as_deref(),
                    wait,
                ),
                QuiescerSettings::Systemd { .. } => return None,
            };
            Some(checked.finish())
        })
        .collect()
}

/// The socket a quiescer reaches its database on, when it is a socket.
fn socket_of(quiescer: &QuiescerSettings) -> Option<(DatabaseKind, PathBuf)> {
    match quiescer {
        QuiescerSettings::Postgresql { socket_dir, port, .. } => Some((
            DatabaseKind::Postgresql,
            socket_dir.join(format!(".s.PGSQL.{port}")),
        )),
        QuiescerSettings::Mariadb { socket, .. } => Some((DatabaseKind::Mariadb, socket.clone())),
        QuiescerSettings::Redis {
            endpoint: crate::config::RedisEndpoint::Socket(socket),
            ..
        } => Some((DatabaseKind::Redis, socket.clone())),
        _ => None,
    }
}
