//! Configuration: TOML files with drop-ins, merged key by key, then validated into [`Settings`].
//!
//! Files are read in this order, later keys winning:
//! `/usr/lib/freezeframe/config.d/*.toml` (vendor defaults), `/etc/freezeframe/config.toml`,
//! `/etc/freezeframe/config.d/*.toml` (drop-ins, by file name). `--config PATH` replaces that list
//! with `PATH` followed by the drop-ins in `config.d/` next to it. The files are merged as TOML
//! tables (`merge.rs`) and deserialized once into the schema (`schema.rs`, every key with its
//! default from `defaults.rs`), then checked here. Every key and its default is documented in
//! `packaging/config/config.toml`, which a test holds equal to the schema. Nothing here does I/O
//! beyond reading files.

mod defaults;
mod merge;
mod quiescer;
mod schema;

pub use defaults::{DEFAULT_API_URL, DEFAULT_RUNTIME_DIR};
pub(crate) use defaults::{
    DEFAULT_HOOK_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT, DEFAULT_MAX_FREEZE, DEFAULT_QUIESCER_TIMEOUT,
    DEFAULT_VOLUME_LINKS,
};
test_kit_pub!(
    pub use merge::parse;
);
pub(crate) use quiescer::{
    ContainerMode, ContainerRule, ContainerSelector, MariadbLogin, QuiescerSettings, RedisEndpoint, UnitMode,
};
test_kit_pub!(
    pub use schema::ConfigFile;
);

use crate::naming::NameTemplate;
use crate::transaction::ports::QuiescePolicy;
use schema::DurationText;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Where the files come from when no `--config` is given.
pub(crate) const VENDOR_DROPIN_DIR: &str = "/usr/lib/freezeframe/config.d";
/// The administrator's main file.
pub(crate) const MAIN_CONFIG: &str = "/etc/freezeframe/config.toml";
/// The administrator's drop-ins.
const DROPIN_DIR: &str = "/etc/freezeframe/config.d";
/// Bounds for `[freeze] max_freeze`.
pub(crate) const MAX_FREEZE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

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
    /// As `Invalid`, with the file and line that set the key (a drop-in, say).
    #[error("invalid `{key}` in {path}, line {line}: {problem}")]
    InvalidAt {
        /// The file whose value counts (the last that sets the key).
        path: PathBuf,
        /// The key's line in it, from 1.
        line: usize,
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

/// Bounds of `[agent] max_prepare_timeout`.
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
    /// Container engines' API sockets, whose containers' databases `auto` quiesces too.
    pub container_sockets: Vec<PathBuf>,
    /// Databases and services, in prepare order (`[[quiescer]]`).
    pub quiescers: Vec<QuiescerSettings>,
    /// What is done to the containers each selects (`[[quiescer]] kind = "container"`), the
    /// first that matches winning; over a container's own label.
    pub containers: Vec<ContainerRule>,
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
        files.extend(dropins(Path::new(DROPIN_DIR)));
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
        let mut texts = Vec::with_capacity(self.files.len());
        for (path, required) in &self.files {
            match std::fs::read_to_string(path) {
                Ok(text) => texts.push((path.as_path(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        let files: Vec<(&Path, &str)> = texts.iter().map(|(path, text)| (*path, text.as_str())).collect();
        // A value found wrong after the merge is placed in the file that set it.
        Settings::validate(parse(&files)?).map_err(|e| match e {
            ConfigError::Invalid { key, problem } => match merge::origin(&files, key) {
                Some((path, line)) => ConfigError::InvalidAt {
                    path: path.to_path_buf(),
                    line,
                    key,
                    problem,
                },
                None => ConfigError::Invalid { key, problem },
            },
            other => other,
        })
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

test_kit_pub! {
/// Parses a duration such as `20s`, `1500ms` or `2m`.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    duration(text).map_err(|e| ConfigError::Invalid {
        key,
        problem: e.to_string(),
    })
}
}

/// A text that is not a duration, and how to write one, in words of ours (the parser's own,
/// "expected number at 0", tell a reader nothing).
#[derive(Debug, thiserror::Error)]
#[error(
    "`{text}` is not a duration{}: write a number and its unit, like \"30s\", \"1500ms\" or \"2m\"",
    why(.problem)
)]
pub(crate) struct BadDuration {
    text: String,
    /// Not a source: its words are the parser's.
    problem: humantime::DurationError,
}

/// What is wrong, where the parser's error says something a reader can use.
fn why(problem: &humantime::DurationError) -> String {
    use humantime::DurationError;
    match problem {
        DurationError::UnknownUnit { unit, .. } => format!(" (`{unit}` is not a unit: use ms, s, m, h or d)"),
        DurationError::NumberOverflow => " (too long)".to_string(),
        DurationError::Empty => " (it is empty)".to_string(),
        DurationError::InvalidCharacter(_) | DurationError::NumberExpected(_) => String::new(),
    }
}

/// A duration, or what is wrong with it and how to write it.
pub(crate) fn duration(text: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(text.trim()).map_err(|problem| BadDuration {
        text: text.to_string(),
        problem,
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
        return Err(out_of_range(key, text, (min, max)));
    }
    Ok(value)
}

fn out_of_range(key: &'static str, text: &str, (min, max): (Duration, Duration)) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: format!(
            "`{}` is out of range: it must be between {} and {}",
            text.trim(),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ),
    }
}

/// A duration key's value, which must be within `range` (inclusive), named as written.
fn in_range(
    key: &'static str,
    value: &DurationText,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    if value.value < min || value.value > max {
        return Err(out_of_range(key, &value.text, (min, max)));
    }
    Ok(value.value)
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
    test_kit_pub! {
    /// Turns the merged configuration into settings, checking every value.
    pub fn validate(file: ConfigFile) -> Result<Settings, ConfigError> {
        Ok(Settings {
            runtime_dir: absolute("agent.runtime_dir", file.agent.runtime_dir.clone())?,
            service: validate_service(file.agent)?,
            freeze: validate_freeze(file.freeze)?,
            snapshot: SnapshotSettings {
                name_template: validate_name_template(
                    "snapshot.name_template",
                    &file.snapshot.name_template,
                )?,
                group_name_template: validate_name_template(
                    "snapshot.group_name_template",
                    &file.snapshot.group_name_template,
                )?,
                keep_last: file.retention.keep_last,
                strategy: either(
                    "snapshot.strategy",
                    &file.snapshot.strategy,
                    ("live", Strategy::Live),
                    ("offline", Strategy::Offline),
                )?,
                provider: validate_provider(&file.snapshot.provider, file.digitalocean, file.local_image)?,
            },
            quiesce: validate_quiesce(file.quiesce, file.quiescer)?,
            verify: validate_verify(file.verify)?,
            history: validate_history(file.history)?,
            metrics: validate_metrics(file.metrics)?,
        })
    }
    }
}

fn validate_history(history: schema::HistorySection) -> Result<HistorySettings, ConfigError> {
    let keep = history.keep;
    let (least, most) = HISTORY_KEEP_RANGE;
    if !(least..=most).contains(&keep) {
        return Err(ConfigError::Invalid {
            key: "history.keep",
            problem: format!("{keep} runs: keep between {least} and {most}"),
        });
    }
    Ok(HistorySettings {
        file: absolute("history.file", history.file)?,
        keep: keep as usize,
    })
}

fn validate_metrics(metrics: schema::MetricsSection) -> Result<MetricsSettings, ConfigError> {
    let textfile_dir = match metrics.textfile_dir {
        dir if dir.as_os_str().is_empty() => None,
        dir => Some(absolute("metrics.textfile_dir", dir)?),
    };
    let listen = match metrics.listen.trim() {
        "" => None,
        text => {
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

fn validate_verify(verify: schema::VerifySection) -> Result<VerifySettings, ConfigError> {
    let schedule = match verify.schedule.trim() {
        "off" => None,
        text => Some(parse_duration_in("verify.schedule", text, DRILL_SCHEDULE_RANGE)?),
    };
    // ssh's command line is split on whitespace: the key's path may hold none.
    let ssh_identity = absolute("verify.ssh_identity", verify.ssh_identity)?;
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
        token_file: absolute("verify.token_file", verify.token_file)?,
        ssh_identity,
        size: Some(verify.size).filter(|s| !s.trim().is_empty()),
        state_file: absolute("verify.state_file", verify.state_file)?,
    })
}

fn validate_service(agent: schema::AgentSection) -> Result<ServiceSettings, ConfigError> {
    if agent.idle_exit.value < Duration::from_secs(1) {
        return Err(ConfigError::Invalid {
            key: "agent.idle_exit",
            problem: "it must be at least 1s".into(),
        });
    }
    Ok(ServiceSettings {
        idle_exit: agent.idle_exit.value,
        public_read: agent.public_read,
        max_prepare_timeout: in_range(
            "agent.max_prepare_timeout",
            &agent.max_prepare_timeout,
            MAX_PREPARE_TIMEOUT_RANGE,
        )?,
    })
}

fn validate_freeze(freeze: schema::FreezeSection) -> Result<FreezeSettings, ConfigError> {
    let max_freeze = in_range("freeze.max_freeze", &freeze.max_freeze, MAX_FREEZE_RANGE)?;
    let mountpoints = match freeze.mountpoints {
        list if list.is_empty() => None,
        list => Some(
            list.into_iter()
                .map(|p| absolute("freeze.mountpoints", p))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let exclude = freeze
        .exclude
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
        expedite_rcu: freeze.expedite_rcu,
        probe: freeze.probe,
    })
}

/// `snapshot.name_template` or `snapshot.group_name_template`: only the second, and always
/// it, names the group, so that a group's snapshots are never a single run's (retention) and
/// always say which group they belong to.
fn validate_name_template(key: &'static str, text: &str) -> Result<NameTemplate, ConfigError> {
    let for_groups = key == "snapshot.group_name_template";
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
    name: &str,
    digitalocean: schema::DigitalOceanSection,
    local_image: schema::LocalImageSection,
) -> Result<ProviderSettings, ConfigError> {
    match name {
        "digitalocean" => Ok(ProviderSettings::DigitalOcean(validate_digitalocean(
            digitalocean,
        )?)),
        "local-image" => Ok(ProviderSettings::LocalImage {
            image_dir: absolute("local_image.image_dir", local_image.image_dir)?,
        }),
        other => Err(ConfigError::Invalid {
            key: "snapshot.provider",
            problem: format!("unknown provider `{other}`; the providers are: digitalocean, local-image"),
        }),
    }
}

fn validate_quiesce(
    quiesce: schema::QuiesceSection,
    quiescers: Vec<schema::QuiescerSection>,
) -> Result<QuiesceSettings, ConfigError> {
    let (mut configured, mut containers) = (Vec::new(), Vec::new());
    for section in quiescers {
        match section.validate()? {
            Ok(quiescer) => configured.push(quiescer),
            Err(rule) => containers.push(rule),
        }
    }
    Ok(QuiesceSettings {
        auto: quiesce.auto,
        on_failure: either(
            "quiesce.on_quiesce_failure",
            &quiesce.on_quiesce_failure,
            ("abort", QuiescePolicy::Abort),
            ("continue", QuiescePolicy::Continue),
        )?,
        hooks_dir: absolute("quiesce.hooks_dir", quiesce.hooks_dir)?,
        hook_timeout: in_range("quiesce.hook_timeout", &quiesce.hook_timeout, STEP_TIMEOUT_RANGE)?,
        container_sockets: quiesce
            .container_sockets
            .into_iter()
            .map(|s| absolute("quiesce.container_sockets", s))
            .collect::<Result<_, _>>()?,
        quiescers: configured,
        containers,
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

/// An API address the token must not be sent to, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiUrlError {
    /// Not a URL at all.
    #[error("`{url}` is not a URL ({problem})")]
    NotUrl {
        /// The address as given.
        url: String,
        /// What the URL parser said.
        problem: String,
    },
    /// Plain http to another machine: the token would cross the network in the clear.
    #[error(
        "`{url}` is plain http to another machine: the API token would cross the network \
         unencrypted; use https://"
    )]
    Cleartext {
        /// The address as given.
        url: String,
    },
    /// Neither https nor http.
    #[error("`{url}` is a {scheme}: URL; the API is reached over https://")]
    Scheme {
        /// The address as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// The API's address (`digitalocean.api_url`, the CLI's `--api-url`): the token goes there,
/// so only over TLS, except to this machine itself (a simulator, a local proxy).
pub fn check_api_url(url: &str) -> Result<(), ApiUrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ApiUrlError::NotUrl {
        url: url.to_string(),
        problem: e.to_string(),
    })?;
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
        "http" => Err(ApiUrlError::Cleartext { url: url.to_string() }),
        other => Err(ApiUrlError::Scheme {
            url: url.to_string(),
            scheme: other.to_string(),
        }),
    }
}

/// A key that takes one of two words: the value it names, or an error naming both.
pub(crate) fn either<T>(
    key: &'static str,
    value: &str,
    first: (&str, T),
    second: (&str, T),
) -> Result<T, ConfigError> {
    match value {
        v if v == first.0 => Ok(first.1),
        v if v == second.0 => Ok(second.1),
        other => Err(ConfigError::Invalid {
            key,
            problem: format!("`{other}` is neither \"{}\" nor \"{}\"", first.0, second.0),
        }),
    }
}

fn validate_digitalocean(f: schema::DigitalOceanSection) -> Result<DigitalOceanSettings, ConfigError> {
    let thaw_after = either(
        "digitalocean.thaw_after",
        &f.thaw_after,
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
            let url = validate_url(key, f.api_url)?;
            check_api_url(&url).map_err(|e| ConfigError::Invalid {
                key,
                problem: e.to_string(),
            })?;
            url
        },
        metadata_url: validate_url("digitalocean.metadata_url", f.metadata_url)?,
        token_file: absolute("digitalocean.token_file", f.token_file)?,
        droplet_id: f.droplet_id,
        thaw_after,
        api_timeout: in_range("digitalocean.api_timeout", &f.api_timeout, API_TIMEOUT_RANGE)?,
        volumes: f.volumes,
        volume_links: absolute("digitalocean.volume_links", f.volume_links)?,
    })
}

#[cfg(test)]
mod key_tests;
#[cfg(test)]
mod tests;
