//! Configuration: TOML files with drop-ins, merged key by key, then validated into [`Settings`].
//!
//! Files are read in this order, later keys winning:
//! `/usr/lib/freezeframe/config.d/*.toml` (vendor defaults), `/etc/freezeframe/config.toml`,
//! `/etc/freezeframe/config.d/*.toml` (drop-ins, by file name). `--config PATH` replaces that list
//! with `PATH` followed by the drop-ins in `config.d/` next to it. Every key and its default is
//! documented in `packaging/config/config.toml`. Nothing here does I/O beyond reading files.

mod fragments;
mod quiescer;

pub(crate) use fragments::ConfigFragment;
pub(crate) use quiescer::{
    MariadbLogin, QuiescerSettings, RedisEndpoint, UnitMode, DEFAULT_LOCK_WAIT_TIMEOUT,
    DEFAULT_QUIESCER_TIMEOUT,
};

use crate::naming::NameTemplate;
use crate::transaction::ports::QuiescePolicy;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the files come from when no `--config` is given.
pub(crate) const VENDOR_DROPIN_DIR: &str = "/usr/lib/freezeframe/config.d";
/// The administrator's main file.
pub(crate) const MAIN_CONFIG: &str = "/etc/freezeframe/config.toml";
/// Where `/run/freezeframe` state lives by default: on tmpfs, never on a frozen filesystem.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/freezeframe";
/// Default for `[freeze] max_freeze`.
pub(crate) const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(20);
/// Bounds for `[freeze] max_freeze`.
pub(crate) const MAX_FREEZE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
pub(crate) use crate::naming::DEFAULT_TEMPLATE as DEFAULT_NAME_TEMPLATE;
/// Defaults for `[digitalocean]`.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
pub(crate) const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
pub(crate) const DEFAULT_TOKEN_FILE: &str = "/etc/freezeframe/token";
pub(crate) const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(15);
/// Where udev links DigitalOcean volumes by name, unless `digitalocean.volume_links` says otherwise.
pub const DEFAULT_VOLUME_LINKS: &str = "/dev/disk/by-id";
/// Defaults for `[quiesce]`.
pub(crate) const DEFAULT_HOOKS_DIR: &str = "/etc/freezeframe/hooks.d";
/// Default for `[quiesce] hook_timeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `[local_image] image_dir`.
pub(crate) const DEFAULT_IMAGE_DIR: &str = "/var/lib/freezeframe/images";

/// Errors from reading or validating configuration. Each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key or value of the wrong shape.
    #[error("configuration file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's words, with the line and column.
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("invalid `{key}` in the configuration: {problem}")]
    Invalid {
        /// The key, as `section.key`.
        key: &'static str,
        /// What is wrong and what to write instead.
        problem: String,
    },
}

/// Validated settings: every value typed, checked and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Lock, frozen-filesystem record: `[agent] runtime_dir`.
    pub runtime_dir: PathBuf,
    /// `[agent]`: how the D-Bus service behaves.
    pub service: ServiceSettings,
    /// `[freeze]`: what is frozen, and for how long at most.
    pub freeze: FreezeSettings,
    /// `[snapshot]`, `[retention]` and the provider's section.
    pub snapshot: SnapshotSettings,
    /// `[quiesce]` and the `[[quiescer]]` list.
    pub quiesce: QuiesceSettings,
    /// `[verify]`: the opt-in restore drill this machine runs on itself.
    pub verify: VerifySettings,
    /// `[history]`: the record of the last runs.
    pub history: HistorySettings,
    /// `[metrics]`: Prometheus metrics from that record.
    pub metrics: MetricsSettings,
}

/// `[history]`: the agent's record of its last runs (`status`, the metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySettings {
    /// Where it is kept.
    pub file: PathBuf,
    /// How many runs it keeps.
    pub keep: usize,
}

/// Bounds of `[history] keep`.
const HISTORY_KEEP_RANGE: (u32, u32) = (1, 1000);

/// `[metrics]`: where the metrics go.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// node_exporter's textfile collector directory; `None`: no file.
    pub textfile_dir: Option<PathBuf>,
    /// The loopback address `freezeframe-agent run` serves `/metrics` on; `None`: off.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[verify]`: a restore drill (`freezeframe verify --scheduled`) after the timer's snapshot,
/// at most once per `schedule`; off unless set, since its token can create and destroy every
/// Droplet and volume of the account.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifySettings {
    /// How often at most; `None`: off.
    pub schedule: Option<Duration>,
    /// The drill's own token, readable by root alone.
    pub token_file: PathBuf,
    /// The SSH private key ssh reaches the restored copy with (the copy keeps this machine's
    /// authorized keys).
    pub ssh_identity: PathBuf,
    /// The restored Droplet's size slug; `None`: the cheapest whose disk fits.
    pub size: Option<String>,
    /// Where the last scheduled drill is recorded.
    pub state_file: PathBuf,
}

/// Bounds of `[verify] schedule`.
const DRILL_SCHEDULE_RANGE: (Duration, Duration) =
    (Duration::from_secs(3600), Duration::from_secs(366 * 86400));

/// How `freezeframe-agent run` serves D-Bus (`[agent]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// Exit after this long with no call and no job (D-Bus activation starts it again).
    pub idle_exit: Duration,
    /// Let any local user call `Status`, `Plan` and `ListSnapshots`, not only root and the
    /// group `freezeframe`.
    pub public_read: bool,
    /// The longest a group's coordinator may keep this machine quiesced waiting to freeze
    /// (`Prepare`'s `timeout-ms`); a Prepare asking for more is refused.
    pub max_prepare_timeout: Duration,
}

/// Default for `[agent] idle_exit`.
pub(crate) const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(300);

/// Default of `[agent] max_prepare_timeout`, and its bounds.
pub(crate) const DEFAULT_MAX_PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_PREPARE_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// `[quiesce]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct QuiesceSettings {
    /// Quiesce the database units systemd runs (PostgreSQL, MariaDB/MySQL, Redis) with their
    /// native quiescers, unless a `[[quiescer]]` of that kind (or for that unit) is configured.
    pub auto: bool,
    /// What a failed `prepare` does: abort the snapshot, or go on filesystem-consistent.
    pub on_failure: QuiescePolicy,
    /// QEMU-guest-agent-style hook scripts; a missing directory has none.
    pub hooks_dir: PathBuf,
    /// Bound on each hook's `freeze` or `thaw`.
    pub hook_timeout: Duration,
    /// Databases and services, in prepare order (`[[quiescer]]`).
    pub quiescers: Vec<QuiescerSettings>,
}

/// `[freeze]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeSettings {
    /// Explicit mountpoints to freeze; `None` means every eligible local filesystem.
    pub mountpoints: Option<Vec<PathBuf>>,
    /// Mountpoints never frozen.
    pub exclude: Vec<PathBuf>,
    /// No filesystem stays frozen longer than this, whatever happens.
    pub max_freeze: Duration,
    /// Expedite RCU grace periods during FIFREEZE (see `kernel::rcu`).
    pub expedite_rcu: bool,
    /// Leave the snapshot-point probe's markers on the frozen filesystems (see `freeze::probe`).
    pub probe: bool,
}

/// `[snapshot]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotSettings {
    /// How snapshots are named unless a name is given.
    pub name_template: NameTemplate,
    /// How a consistency group's snapshots are named: always with the group's id.
    pub group_name_template: NameTemplate,
    /// Keep this many of this machine's freezeframe snapshots, deleting older ones (0: all).
    pub keep_last: u32,
    /// `snapshot.provider` and its section.
    pub provider: ProviderSettings,
    /// How this Droplet is to be snapshotted.
    pub strategy: Strategy,
}

/// `snapshot.strategy`: live (this agent quiesces, freezes and snapshots), or offline (shut
/// down, snapshotted while off, powered on: driven from another machine, since a Droplet that
/// is off cannot power itself on; this agent then takes no snapshot of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Quiesce, freeze, request, thaw: the agent's own runs.
    Live,
    /// `freezeframe snapshot --offline` from another machine only.
    Offline,
}

/// The snapshot provider and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSettings {
    /// A Droplet snapshot through the DigitalOcean API.
    DigitalOcean(DigitalOceanSettings),
    /// Copies each frozen block device into `image_dir`.
    LocalImage {
        /// Where the images go (`local_image.image_dir`).
        image_dir: PathBuf,
    },
}

impl ProviderSettings {
    /// The provider's name as written in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderSettings::DigitalOcean(_) => "digitalocean",
            ProviderSettings::LocalImage { .. } => "local-image",
        }
    }
}

/// When the filesystems are thawed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThawAfter {
    /// As soon as the API accepted the snapshot action (201, in progress).
    Registered,
    /// Only once the action reports `completed` (bounded by `max_freeze`).
    Completed,
}

/// `[digitalocean]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitalOceanSettings {
    /// The API's base URL, without a trailing slash.
    pub api_url: String,
    /// The Droplet metadata service's base URL.
    pub metadata_url: String,
    /// The file holding the API token, readable by root alone.
    pub token_file: PathBuf,
    /// `None`: ask the metadata service.
    pub droplet_id: Option<u64>,
    /// When the filesystems are thawed.
    pub thaw_after: ThawAfter,
    /// Bound on each API call outside the frozen window.
    pub api_timeout: Duration,
    /// Snapshot attached volumes whose filesystems are frozen, in the same window.
    pub volumes: bool,
    /// Where udev links DigitalOcean volumes (`scsi-0DO_Volume_<name>`).
    pub volume_links: PathBuf,
}

/// The list of files to read, in order.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    /// Files read in order; a missing one is an error only if `required`.
    files: Vec<(PathBuf, bool)>,
}

impl ConfigSources {
    /// The system locations (vendor drop-ins, `/etc` file, `/etc` drop-ins).
    pub fn system() -> Self {
        let mut files: Vec<(PathBuf, bool)> = dropins(Path::new(VENDOR_DROPIN_DIR));
        files.push((PathBuf::from(MAIN_CONFIG), false));
        files.extend(dropins(Path::new("/etc/freezeframe/config.d")));
        ConfigSources { files }
    }

    /// An explicit main file (which must exist), then the drop-ins in `config.d/` beside it.
    pub fn explicit(path: &Path) -> Self {
        let mut files = vec![(path.to_path_buf(), true)];
        let dir = path.parent().unwrap_or(Path::new("."));
        files.extend(dropins(&dir.join("config.d")));
        ConfigSources { files }
    }

    #[cfg(test)]
    /// The files that will be read, for messages.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Reads and merges every file, then validates.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let mut merged = ConfigFragment::default();
        for (path, required) in &self.files {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            merged.merge(parse_fragment(path, &text)?);
        }
        Settings::validate(merged)
    }
}

/// `*.toml` files in `dir`, sorted by file name; none if the folder does not exist.
fn dropins(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files.into_iter().map(|p| (p, true)).collect()
}

/// Parses one file's text.
pub fn parse_fragment(path: &Path, text: &str) -> Result<ConfigFragment, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', "\n  "),
    })
}

/// Parses a duration such as `20s`, `1500ms` or `2m`.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| ConfigError::Invalid {
        key,
        problem: format!("`{text}` is not a duration ({e}); write it like \"20s\", \"1500ms\" or \"2m\""),
    })
}

/// Parses a duration and requires it within `range` (inclusive): a typo like "1000000d" is an
/// error, not a timer that never fires.
pub(crate) fn parse_duration_in(
    key: &'static str,
    text: &str,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let value = parse_duration(key, text)?;
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            problem: format!(
                "`{}` is out of range: it must be between {} and {}",
                text.trim(),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(value)
}

/// A duration key within `range`, or `default` when it is not set.
fn duration_or(
    key: &'static str,
    text: Option<fragments::DurationText>,
    range: (Duration, Duration),
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        Some(text) => parse_duration_in(key, &text, range),
        None => Ok(default),
    }
}

/// Bounds of the timeouts of quiescers and hooks, and of API calls.
const STEP_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
const API_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Requires an absolute path and removes `.` components and trailing slashes.
fn absolute(key: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(ConfigError::Invalid {
            key,
            problem: format!("`{}` must be an absolute path without `..`", path.display()),
        });
    }
    Ok(path.components().collect())
}

impl Settings {
    /// Turns merged fragments into settings, applying defaults and checking every value.
    pub fn validate(fragment: ConfigFragment) -> Result<Settings, ConfigError> {
        let agent = fragment.agent.unwrap_or_default();
        Ok(Settings {
            runtime_dir: absolute(
                "agent.runtime_dir",
                agent
                    .runtime_dir
                    .clone()
                    .unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into()),
            )?,
            service: validate_service(agent)?,
            freeze: validate_freeze(fragment.freeze.unwrap_or_default())?,
            snapshot: SnapshotSettings {
                name_template: validate_name_template(
                    "snapshot.name_template",
                    fragment.snapshot.as_ref().and_then(|s| s.name_template.clone()),
                )?,
                group_name_template: validate_name_template(
                    "snapshot.group_name_template",
                    fragment
                        .snapshot
                        .as_ref()
                        .and_then(|s| s.group_name_template.clone()),
                )?,
                keep_last: fragment.retention.unwrap_or_default().keep_last.unwrap_or(0),
                strategy: either(
                    "snapshot.strategy",
                    fragment.snapshot.as_ref().and_then(|s| s.strategy.as_deref()),
                    ("live", Strategy::Live),
                    ("offline", Strategy::Offline),
                )?,
                provider: validate_provider(
                    fragment.snapshot.unwrap_or_default().provider,
                    fragment.digitalocean.unwrap_or_default(),
                    fragment.local_image.unwrap_or_default(),
                )?,
            },
            quiesce: validate_quiesce(
                fragment.quiesce.unwrap_or_default(),
                fragment.quiescer.unwrap_or_default(),
            )?,
            verify: validate_verify(fragment.verify.unwrap_or_default())?,
            history: validate_history(fragment.history.unwrap_or_default())?,
            metrics: validate_metrics(fragment.metrics.unwrap_or_default())?,
        })
    }
}

fn validate_history(history: fragments::HistoryFragment) -> Result<HistorySettings, ConfigError> {
    let keep = history.keep.unwrap_or(50);
    let (least, most) = HISTORY_KEEP_RANGE;
    if !(least..=most).contains(&keep) {
        return Err(ConfigError::Invalid {
            key: "history.keep",
            problem: format!("{keep} runs: keep between {least} and {most}"),
        });
    }
    Ok(HistorySettings {
        file: absolute(
            "history.file",
            history
                .file
                .unwrap_or_else(|| "/var/lib/freezeframe/history.json".into()),
        )?,
        keep: keep as usize,
    })
}

fn validate_metrics(metrics: fragments::MetricsFragment) -> Result<MetricsSettings, ConfigError> {
    let textfile_dir = match metrics.textfile_dir {
        Some(dir) if dir.as_os_str().is_empty() => None,
        Some(dir) => Some(absolute("metrics.textfile_dir", dir)?),
        None => Some("/var/lib/prometheus/node-exporter".into()),
    };
    let listen = match metrics.listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let address: std::net::SocketAddr = text.parse().map_err(|_| ConfigError::Invalid {
                key: "metrics.listen",
                problem: format!("`{text}` is not an address and port, such as \"127.0.0.1:9846\""),
            })?;
            if !address.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    key: "metrics.listen",
                    problem: format!(
                        "{address} is not a loopback address: the metrics are served to this machine \
                         only (127.0.0.1 or [::1]); a scraper elsewhere reads them through node_exporter"
                    ),
                });
            }
            Some(address)
        }
    };
    Ok(MetricsSettings { textfile_dir, listen })
}

fn validate_verify(verify: fragments::VerifyFragment) -> Result<VerifySettings, ConfigError> {
    let schedule = match verify.schedule.as_deref().map(str::trim) {
        None | Some("off") => None,
        Some(text) => Some(parse_duration_in("verify.schedule", text, DRILL_SCHEDULE_RANGE)?),
    };
    // ssh's command line is split on whitespace: the key's path may hold none.
    let ssh_identity = absolute(
        "verify.ssh_identity",
        verify
            .ssh_identity
            .unwrap_or_else(|| "/etc/freezeframe/drill-ssh-key".into()),
    )?;
    if ssh_identity.to_string_lossy().contains(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            key: "verify.ssh_identity",
            problem: format!(
                "`{}` holds a space: ssh's command line cannot take it",
                ssh_identity.display()
            ),
        });
    }
    Ok(VerifySettings {
        schedule,
        token_file: absolute(
            "verify.token_file",
            verify
                .token_file
                .unwrap_or_else(|| "/etc/freezeframe/drill-token".into()),
        )?,
        ssh_identity,
        size: verify.size.filter(|s| !s.trim().is_empty()),
        state_file: absolute(
            "verify.state_file",
            verify
                .state_file
                .unwrap_or_else(|| "/var/lib/freezeframe/drill.json".into()),
        )?,
    })
}

fn validate_service(agent: fragments::AgentFragment) -> Result<ServiceSettings, ConfigError> {
    let idle_exit = match &agent.idle_exit {
        Some(text) => parse_duration("agent.idle_exit", text)?,
        None => DEFAULT_IDLE_EXIT,
    };
    if idle_exit < Duration::from_secs(1) {
        return Err(ConfigError::Invalid {
            key: "agent.idle_exit",
            problem: "it must be at least 1s".into(),
        });
    }
    Ok(ServiceSettings {
        idle_exit,
        public_read: agent.public_read.unwrap_or(false),
        max_prepare_timeout: match &agent.max_prepare_timeout {
            Some(text) => parse_duration_in("agent.max_prepare_timeout", text, MAX_PREPARE_TIMEOUT_RANGE)?,
            None => DEFAULT_MAX_PREPARE_TIMEOUT,
        },
    })
}

fn validate_freeze(freeze: fragments::FreezeFragment) -> Result<FreezeSettings, ConfigError> {
    let max_freeze = duration_or(
        "freeze.max_freeze",
        freeze.max_freeze,
        MAX_FREEZE_RANGE,
        DEFAULT_MAX_FREEZE,
    )?;
    let mountpoints = match freeze.mountpoints {
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => Some(
            list.into_iter()
                .map(|p| absolute("freeze.mountpoints", p))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let exclude = freeze
        .exclude
        .unwrap_or_default()
        .into_iter()
        .map(|p| absolute("freeze.exclude", p))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(both) = mountpoints.iter().flatten().find(|m| exclude.contains(m)) {
        return Err(ConfigError::Invalid {
            key: "freeze.exclude",
            problem: format!(
                "{} is both in `freeze.mountpoints` and in `freeze.exclude`; remove it from one",
                both.display()
            ),
        });
    }
    Ok(FreezeSettings {
        mountpoints,
        exclude,
        max_freeze,
        expedite_rcu: freeze.expedite_rcu.unwrap_or(true),
        probe: freeze.probe.unwrap_or(true),
    })
}

/// `snapshot.name_template` or `snapshot.group_name_template`: only the second, and always
/// it, names the group, so that a group's snapshots are never a single run's (retention) and
/// always say which group they belong to.
fn validate_name_template(key: &'static str, text: Option<String>) -> Result<NameTemplate, ConfigError> {
    let for_groups = key == "snapshot.group_name_template";
    let text = text.unwrap_or_else(|| {
        if for_groups {
            crate::naming::DEFAULT_GROUP_TEMPLATE
        } else {
            DEFAULT_NAME_TEMPLATE
        }
        .to_string()
    });
    let template: NameTemplate =
        text.parse()
            .map_err(|e: crate::naming::TemplateError| ConfigError::Invalid {
                key,
                problem: e.to_string(),
            })?;
    if template.has_group() != for_groups {
        return Err(ConfigError::Invalid {
            key,
            problem: if for_groups {
                format!("`{text}` has no {{group}}: a group's snapshots must carry the group's id")
            } else {
                format!("`{text}` has {{group}}, which only snapshot.group_name_template may use")
            },
        });
    }
    // Literal parts end up in file and image names: keep them plain.
    let literal = text.split(['{', '}']).step_by(2).collect::<String>();
    if !literal
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(ConfigError::Invalid {
            key,
            problem: format!("`{text}`: outside placeholders use only letters, digits, `.`, `_` and `-`"),
        });
    }
    // A long host name needs no check here: names cut it to fit (`NameTemplate::render`).
    Ok(template)
}

fn validate_provider(
    name: Option<String>,
    digitalocean: fragments::DigitalOceanFragment,
    local_image: fragments::LocalImageFragment,
) -> Result<ProviderSettings, ConfigError> {
    match name.as_deref() {
        None | Some("digitalocean") => Ok(ProviderSettings::DigitalOcean(validate_digitalocean(
            digitalocean,
        )?)),
        Some("local-image") => Ok(ProviderSettings::LocalImage {
            image_dir: absolute(
                "local_image.image_dir",
                local_image.image_dir.unwrap_or_else(|| DEFAULT_IMAGE_DIR.into()),
            )?,
        }),
        Some(other) => Err(ConfigError::Invalid {
            key: "snapshot.provider",
            problem: format!("unknown provider `{other}`; the providers are: digitalocean, local-image"),
        }),
    }
}

fn validate_quiesce(
    f: fragments::QuiesceFragment,
    quiescers: Vec<fragments::QuiescerFragment>,
) -> Result<QuiesceSettings, ConfigError> {
    let on_failure = either(
        "quiesce.on_quiesce_failure",
        f.on_quiesce_failure.as_deref(),
        ("abort", QuiescePolicy::Abort),
        ("continue", QuiescePolicy::Continue),
    )?;
    let hook_timeout = duration_or(
        "quiesce.hook_timeout",
        f.hook_timeout,
        STEP_TIMEOUT_RANGE,
        DEFAULT_HOOK_TIMEOUT,
    )?;
    Ok(QuiesceSettings {
        auto: f.auto.unwrap_or(true),
        on_failure,
        hooks_dir: absolute(
            "quiesce.hooks_dir",
            f.hooks_dir.unwrap_or_else(|| DEFAULT_HOOKS_DIR.into()),
        )?,
        hook_timeout,
        quiescers: quiescers
            .into_iter()
            .map(fragments::QuiescerFragment::validate)
            .collect::<Result<_, _>>()?,
    })
}

fn validate_url(key: &'static str, url: String) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url.trim_end_matches('/').to_string()),
        _ => Err(ConfigError::Invalid {
            key,
            problem: format!("`{url}` is not an http:// or https:// URL"),
        }),
    }
}

/// The API's address (`digitalocean.api_url`, the CLI's `--api-url`): the token goes there,
/// so only over TLS, except to this machine itself (a simulator, a local proxy).
pub fn check_api_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    let host = parsed.host_str().unwrap_or_default();
    // `localhost` counts as this machine: the API client resolves it to 127.0.0.1/::1 itself,
    // never through NSS (which could ask DNS where /etc/hosts lacks it).
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http to another machine: the API token would cross the network \
             unencrypted; use https://"
        )),
        other => Err(format!(
            "`{url}` is a {other}: URL; the API is reached over https://"
        )),
    }
}

/// A key that takes one of two words, the first its default: the value it names, or an error
/// naming both.
pub(crate) fn either<T>(
    key: &'static str,
    value: Option<&str>,
    first: (&str, T),
    second: (&str, T),
) -> Result<T, ConfigError> {
    match value {
        None => Ok(first.1),
        Some(v) if v == first.0 => Ok(first.1),
        Some(v) if v == second.0 => Ok(second.1),
        Some(other) => Err(ConfigError::Invalid {
            key,
            problem: format!("`{other}` is neither \"{}\" nor \"{}\"", first.0, second.0),
        }),
    }
}

fn validate_digitalocean(f: fragments::DigitalOceanFragment) -> Result<DigitalOceanSettings, ConfigError> {
    let thaw_after = either(
        "digitalocean.thaw_after",
        f.thaw_after.as_deref(),
        ("registered", ThawAfter::Registered),
        ("completed", ThawAfter::Completed),
    )?;
    if f.droplet_id == Some(0) {
        return Err(ConfigError::Invalid {
            key: "digitalocean.droplet_id",
            problem: "0 is not a Droplet id; remove the key to ask the metadata service".into(),
        });
    }
    Ok(DigitalOceanSettings {
        api_url: {
            let key = "digitalocean.api_url";
            let url = validate_url(key, f.api_url.unwrap_or_else(|| DEFAULT_API_URL.into()))?;
            check_api_url(&url).map_err(|problem| ConfigError::Invalid { key, problem })?;
            url
        },
        metadata_url: validate_url(
            "digitalocean.metadata_url",
            f.metadata_url.unwrap_or_else(|| DEFAULT_METADATA_URL.into()),
        )?,
        token_file: absolute(
            "digitalocean.token_file",
            f.token_file.unwrap_or_else(|| DEFAULT_TOKEN_FILE.into()),
        )?,
        droplet_id: f.droplet_id,
        thaw_after,
        api_timeout: duration_or(
            "digitalocean.api_timeout",
            f.api_timeout,
            API_TIMEOUT_RANGE,
            DEFAULT_API_TIMEOUT,
        )?,
        volumes: f.volumes.unwrap_or(true),
        volume_links: absolute(
            "digitalocean.volume_links",
            f.volume_links.unwrap_or_else(|| DEFAULT_VOLUME_LINKS.into()),
        )?,
    })
}

#[cfg(test)]
mod tests;
