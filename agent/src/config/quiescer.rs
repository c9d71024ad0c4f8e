//! `[[quiescer]]`, validated: each kind's section (see `schema.rs`, where a key that does not
//! apply to the kind is refused by the parser) checks its own values into [`QuiescerSettings`].

use super::defaults::{DEFAULT_MARIADB_USER, DEFAULT_REDIS_ADDRESS};
use super::schema::{
    ContainerSection, DurationText, MariadbSection, PostgresqlSection, QuiescerSection, RedisSection,
    SystemdSection,
};
use super::{absolute, either, in_range, ConfigError, STEP_TIMEOUT_RANGE};
use std::path::PathBuf;
use std::time::Duration;

/// One `[[quiescer]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum QuiescerSettings {
    Redis {
        endpoint: RedisEndpoint,
        /// A file holding the `requirepass` password, readable by root alone.
        password_file: Option<PathBuf>,
        timeout: Duration,
    },
    Postgresql {
        socket_dir: PathBuf,
        port: u16,
        os_user: String,
        /// A `CHECKPOINT` before the freeze: less WAL to replay at restore, more writes now.
        checkpoint: bool,
        timeout: Duration,
    },
    Mariadb {
        socket: PathBuf,
        login: MariadbLogin,
        lock_wait_timeout: Duration,
        timeout: Duration,
    },
    /// A unit frozen with the cgroup freezer, or stopped, through systemd.
    Systemd {
        unit: String,
        mode: UnitMode,
        timeout: Duration,
    },
}

impl QuiescerSettings {
    /// The `kind` as configured, for matching against detected databases.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            QuiescerSettings::Redis { .. } => "redis",
            QuiescerSettings::Postgresql { .. } => "postgresql",
            QuiescerSettings::Mariadb { .. } => "mariadb",
            QuiescerSettings::Systemd { .. } => "systemd",
        }
    }
}

impl QuiescerSection {
    /// Checks every value: a container's section becomes a rule for the containers it
    /// selects, any other a quiescer.
    pub(crate) fn validate(self) -> Result<Result<QuiescerSettings, ContainerRule>, ConfigError> {
        match self {
            QuiescerSection::Mariadb(f) => f.validate().map(Ok),
            QuiescerSection::Postgresql(f) => f.validate().map(Ok),
            QuiescerSection::Redis(f) => f.validate().map(Ok),
            QuiescerSection::Systemd(f) => f.validate().map(Ok),
            QuiescerSection::Container(f) => f.validate().map(Err),
        }
    }
}

fn timeout(value: &DurationText) -> Result<Duration, ConfigError> {
    in_range("quiescer.timeout", value, STEP_TIMEOUT_RANGE)
}

fn password_file(path: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    path.map(|p| absolute("quiescer.password_file", p)).transpose()
}

impl MariadbSection {
    fn validate(self) -> Result<QuiescerSettings, ConfigError> {
        if self.user.is_empty() || self.user.contains(['\0', '\n']) {
            return Err(ConfigError::Invalid {
                key: "quiescer.user",
                problem: "it must be a non-empty database user name".into(),
            });
        }
        Ok(QuiescerSettings::Mariadb {
            socket: absolute("quiescer.socket", self.socket)?,
            login: MariadbLogin {
                user: self.user,
                password_file: password_file(self.password_file)?,
            },
            lock_wait_timeout: in_range(
                "quiescer.lock_wait_timeout",
                &self.lock_wait_timeout,
                STEP_TIMEOUT_RANGE,
            )?,
            timeout: timeout(&self.timeout)?,
        })
    }
}

impl PostgresqlSection {
    fn validate(self) -> Result<QuiescerSettings, ConfigError> {
        Ok(QuiescerSettings::Postgresql {
            socket_dir: absolute("quiescer.socket_dir", self.socket_dir)?,
            port: self.port,
            os_user: self.os_user,
            checkpoint: self.checkpoint,
            timeout: timeout(&self.timeout)?,
        })
    }
}

impl RedisSection {
    fn validate(self) -> Result<QuiescerSettings, ConfigError> {
        let endpoint = match (self.socket, self.address) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "quiescer",
                    problem: "a redis quiescer takes `socket` or `address`, not both".into(),
                })
            }
            (Some(socket), None) => RedisEndpoint::Socket(absolute("quiescer.socket", socket)?),
            (None, address) => RedisEndpoint::Tcp(address.unwrap_or_else(|| DEFAULT_REDIS_ADDRESS.into())),
        };
        Ok(QuiescerSettings::Redis {
            endpoint,
            password_file: password_file(self.password_file)?,
            timeout: timeout(&self.timeout)?,
        })
    }
}

impl SystemdSection {
    fn validate(self) -> Result<QuiescerSettings, ConfigError> {
        let unit = self.unit.ok_or_else(|| ConfigError::Invalid {
            key: "quiescer.unit",
            problem: "a systemd quiescer needs the `unit` to quiesce, such as \"myapp.service\"".into(),
        })?;
        let unit = validate_unit(&unit).map_err(|e| ConfigError::Invalid {
            key: "quiescer.unit",
            problem: e.to_string(),
        })?;
        let mode = either(
            "quiescer.mode",
            &self.mode,
            ("freeze", UnitMode::Freeze),
            ("stop", UnitMode::Stop),
        )?;
        Ok(QuiescerSettings::Systemd {
            unit,
            mode,
            timeout: timeout(&self.timeout)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitMode {
    /// Cgroup freezer: no downtime, the processes just stop running for the window.
    Freeze,
    /// Stop before, start after: for services that must close their files.
    Stop,
}

impl std::fmt::Display for UnitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnitMode::Freeze => "freeze",
            UnitMode::Stop => "stop",
        })
    }
}

/// What is done to a container across the window: a `[[quiescer]] kind = "container"`'s `mode`,
/// or the container's own `freezeframe.quiesce` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerMode {
    /// Its database's native quiescer when it runs one freezeframe knows; nothing otherwise.
    Auto,
    /// Paused across the window (the engine's pause: the cgroup freezer).
    Pause,
    /// Left alone: nothing in it needs quiescing.
    None,
}

impl ContainerMode {
    /// The label's key on a container.
    pub(crate) const LABEL: &'static str = "freezeframe.quiesce";

    pub(crate) fn parse(text: &str) -> Option<ContainerMode> {
        match text {
            "auto" => Some(ContainerMode::Auto),
            "pause" => Some(ContainerMode::Pause),
            "none" => Some(ContainerMode::None),
            _ => None,
        }
    }
}

impl std::fmt::Display for ContainerMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerMode::Auto => "auto",
            ContainerMode::Pause => "pause",
            ContainerMode::None => "none",
        })
    }
}

/// Which containers a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerSelector {
    /// The container of that name.
    Name(String),
    /// Containers with that label (and, when given, that value).
    Label { key: String, value: Option<String> },
}

impl std::fmt::Display for ContainerSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerSelector::Name(name) => write!(f, "name = \"{name}\""),
            ContainerSelector::Label { key, value: None } => write!(f, "label = \"{key}\""),
            ContainerSelector::Label { key, value: Some(v) } => write!(f, "label = \"{key}={v}\""),
        }
    }
}

/// One `[[quiescer]] kind = "container"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRule {
    pub selector: ContainerSelector,
    pub mode: ContainerMode,
    /// Bound on the pause and on the unpause.
    pub timeout: Duration,
}

impl ContainerSection {
    fn validate(self) -> Result<ContainerRule, ConfigError> {
        let invalid = |key, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_string(),
        };
        let selector = match (self.name, self.label) {
            (Some(name), None) => {
                ContainerSelector::Name(crate::container::valid_name(&name).ok_or_else(|| {
                    invalid(
                        "quiescer.name",
                        "it is not a container name (letters, digits, `_.-`)",
                    )
                })?)
            }
            (None, Some(label)) => {
                let (key, value) = match label.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (label.clone(), None),
                };
                if key.is_empty() || label.chars().any(char::is_control) {
                    return Err(invalid(
                        "quiescer.label",
                        "it must be `key` or `key=value`, such as \"com.example.role=worker\"",
                    ));
                }
                ContainerSelector::Label { key, value }
            }
            _ => {
                return Err(invalid(
                    "quiescer",
                    "a container quiescer selects its containers by `name` or by `label`, one of the two",
                ))
            }
        };
        let mode = ContainerMode::parse(&self.mode).ok_or_else(|| ConfigError::Invalid {
            key: "quiescer.mode",
            problem: format!("`{}` is not \"pause\", \"none\" or \"auto\"", self.mode),
        })?;
        Ok(ContainerRule {
            selector,
            mode,
            timeout: timeout(&self.timeout)?,
        })
    }
}

/// Units the agent itself needs while it works: freezing or stopping one would hang the run.
const NEEDED_BY_THE_AGENT: &[&str] = &[
    "dbus.service",
    "dbus-broker.service",
    "dbus.socket",
    "init.scope",
    "-.slice",
    "system.slice",
];

/// A configured unit that cannot be quiesced, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum UnitNameError {
    /// Not a unit name at all.
    #[error("`{0}` is not a unit name")]
    Malformed(String),
    /// A unit of a type that cannot be frozen or stopped (a mount, a timer, …).
    #[error("`{0}` is not a service or scope; only those can be frozen or stopped for a snapshot")]
    NotServiceOrScope(String),
    /// A unit the agent needs while it works.
    #[error(
        "`{0}` is needed while the snapshot is taken (the agent talks to systemd over D-Bus); \
         quiescing it would hang the run"
    )]
    NeededByTheAgent(String),
}

/// Checks a configured unit name and completes a bare name with `.service`, as systemctl does.
pub(super) fn validate_unit(unit: &str) -> Result<String, UnitNameError> {
    if unit.is_empty() || unit.len() > 255 || unit.contains(['/', '\0', '\n', ' ']) {
        return Err(UnitNameError::Malformed(unit.to_string()));
    }
    let unit = if [".service", ".scope"].iter().any(|s| unit.ends_with(s)) {
        unit.to_string()
    } else if unit.contains('.') && !unit.contains('@') {
        return Err(UnitNameError::NotServiceOrScope(unit.to_string()));
    } else {
        format!("{unit}.service")
    };
    if NEEDED_BY_THE_AGENT.contains(&unit.as_str())
        || unit.starts_with("systemd-")
        || unit.starts_with("freezeframe")
    {
        return Err(UnitNameError::NeededByTheAgent(unit));
    }
    Ok(unit)
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    Socket(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisEndpoint::Socket(p) => write!(f, "{}", p.display()),
            RedisEndpoint::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// Whom the sessions log in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MariadbLogin {
    pub user: String,
    /// A file only root can read; `None` for `unix_socket` authentication.
    pub password_file: Option<PathBuf>,
}

impl Default for MariadbLogin {
    fn default() -> Self {
        MariadbLogin {
            user: DEFAULT_MARIADB_USER.into(),
            password_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_checked() {
        assert_eq!(validate_unit("redis-server").unwrap(), "redis-server.service");
        assert_eq!(validate_unit("app@1").unwrap(), "app@1.service");
        assert_eq!(validate_unit("job.scope").unwrap(), "job.scope");
        let needed = |unit: &str| UnitNameError::NeededByTheAgent(unit.into());
        for (bad, why) in [
            ("", UnitNameError::Malformed("".into())),
            ("a/b", UnitNameError::Malformed("a/b".into())),
            ("dbus", needed("dbus.service")),
            ("dbus.service", needed("dbus.service")),
            ("systemd-logind", needed("systemd-logind.service")),
            ("freezeframe-agent", needed("freezeframe-agent.service")),
            ("x.timer", UnitNameError::NotServiceOrScope("x.timer".into())),
        ] {
            assert_eq!(validate_unit(bad), Err(why), "{bad}");
        }
        assert!(needed("dbus.service").to_string().contains("would hang the run"));
    }
}
