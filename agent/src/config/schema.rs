//! The configuration's schema: every key, its type and its default (`defaults.rs`), as one
//! serde type. The files are merged as TOML tables first (`merge.rs`) and the result is
//! deserialized once into [`ConfigFile`]; unknown keys are refused. Values are checked and
//! turned into [`super::Settings`] afterwards (`Settings::validate`).

use super::defaults::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

test_kit_pub! {
/// The whole configuration as written, every key given its default.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub(crate) agent: AgentSection,
    pub(crate) freeze: FreezeSection,
    pub(crate) snapshot: SnapshotSection,
    pub(crate) local_image: LocalImageSection,
    pub(crate) digitalocean: DigitalOceanSection,
    pub(crate) retention: RetentionSection,
    pub(crate) verify: VerifySection,
    pub(crate) history: HistorySection,
    pub(crate) metrics: MetricsSection,
    pub(crate) quiesce: QuiesceSection,
    /// `[[quiescer]]` entries; a later file's list replaces an earlier one's.
    pub(crate) quiescer: Vec<QuiescerSection>,
}
}

/// `[agent]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AgentSection {
    pub(crate) runtime_dir: PathBuf,
    pub(crate) idle_exit: DurationText,
    pub(crate) public_read: bool,
    pub(crate) max_prepare_timeout: DurationText,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            runtime_dir: DEFAULT_RUNTIME_DIR.into(),
            idle_exit: DEFAULT_IDLE_EXIT.into(),
            public_read: DEFAULT_PUBLIC_READ,
            max_prepare_timeout: DEFAULT_MAX_PREPARE_TIMEOUT.into(),
        }
    }
}

/// `[freeze]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FreezeSection {
    /// Empty: every eligible local filesystem.
    pub(crate) mountpoints: Vec<PathBuf>,
    pub(crate) exclude: Vec<PathBuf>,
    pub(crate) max_freeze: DurationText,
    pub(crate) expedite_rcu: bool,
    pub(crate) probe: bool,
}

impl Default for FreezeSection {
    fn default() -> Self {
        FreezeSection {
            mountpoints: Vec::new(),
            exclude: Vec::new(),
            max_freeze: DEFAULT_MAX_FREEZE.into(),
            expedite_rcu: DEFAULT_EXPEDITE_RCU,
            probe: DEFAULT_PROBE,
        }
    }
}

/// `[snapshot]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SnapshotSection {
    pub(crate) provider: String,
    pub(crate) name_template: String,
    pub(crate) group_name_template: String,
    pub(crate) strategy: String,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        SnapshotSection {
            provider: DEFAULT_PROVIDER.into(),
            name_template: DEFAULT_NAME_TEMPLATE.into(),
            group_name_template: DEFAULT_GROUP_NAME_TEMPLATE.into(),
            strategy: DEFAULT_STRATEGY.into(),
        }
    }
}

/// `[local_image]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LocalImageSection {
    pub(crate) image_dir: PathBuf,
}

impl Default for LocalImageSection {
    fn default() -> Self {
        LocalImageSection {
            image_dir: DEFAULT_IMAGE_DIR.into(),
        }
    }
}

/// `[digitalocean]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DigitalOceanSection {
    pub(crate) api_url: String,
    pub(crate) metadata_url: String,
    pub(crate) token_file: PathBuf,
    /// `None`: ask the metadata service.
    pub(crate) droplet_id: Option<u64>,
    pub(crate) thaw_after: String,
    pub(crate) api_timeout: DurationText,
    pub(crate) volumes: bool,
    pub(crate) volume_links: PathBuf,
}

impl Default for DigitalOceanSection {
    fn default() -> Self {
        DigitalOceanSection {
            api_url: DEFAULT_API_URL.into(),
            metadata_url: DEFAULT_METADATA_URL.into(),
            token_file: DEFAULT_TOKEN_FILE.into(),
            droplet_id: None,
            thaw_after: DEFAULT_THAW_AFTER.into(),
            api_timeout: DEFAULT_API_TIMEOUT.into(),
            volumes: DEFAULT_VOLUMES,
            volume_links: DEFAULT_VOLUME_LINKS.into(),
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetentionSection {
    pub(crate) keep_last: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            keep_last: DEFAULT_KEEP_LAST,
        }
    }
}

/// `[verify]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct VerifySection {
    /// `"off"` or a duration.
    pub(crate) schedule: String,
    pub(crate) token_file: PathBuf,
    pub(crate) ssh_identity: PathBuf,
    /// Empty: the cheapest size whose disk fits.
    pub(crate) size: String,
    pub(crate) state_file: PathBuf,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            schedule: DEFAULT_DRILL_SCHEDULE.into(),
            token_file: DEFAULT_DRILL_TOKEN_FILE.into(),
            ssh_identity: DEFAULT_DRILL_SSH_IDENTITY.into(),
            size: DEFAULT_DRILL_SIZE.into(),
            state_file: DEFAULT_DRILL_STATE_FILE.into(),
        }
    }
}

/// `[history]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HistorySection {
    pub(crate) file: PathBuf,
    pub(crate) keep: u32,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            file: DEFAULT_HISTORY_FILE.into(),
            keep: DEFAULT_HISTORY_KEEP,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsSection {
    /// Empty: no file.
    pub(crate) textfile_dir: PathBuf,
    /// Empty: no HTTP endpoint.
    pub(crate) listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            textfile_dir: DEFAULT_TEXTFILE_DIR.into(),
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

/// `[quiesce]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QuiesceSection {
    pub(crate) auto: bool,
    pub(crate) on_quiesce_failure: String,
    pub(crate) hooks_dir: PathBuf,
    pub(crate) hook_timeout: DurationText,
    pub(crate) container_sockets: Vec<PathBuf>,
}

impl Default for QuiesceSection {
    fn default() -> Self {
        QuiesceSection {
            auto: DEFAULT_AUTO,
            on_quiesce_failure: DEFAULT_ON_QUIESCE_FAILURE.into(),
            hooks_dir: DEFAULT_HOOKS_DIR.into(),
            hook_timeout: DEFAULT_HOOK_TIMEOUT.into(),
            container_sockets: DEFAULT_CONTAINER_SOCKETS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// One `[[quiescer]]`: one table per database or service, its keys set by its `kind`. Each
/// kind is its own type, so a key that does not apply to it is refused with the list of those
/// that do.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum QuiescerSection {
    #[serde(alias = "mysql")]
    Mariadb(MariadbSection),
    Postgresql(PostgresqlSection),
    Redis(RedisSection),
    Systemd(SystemdSection),
}

impl QuiescerSection {
    /// Each kind with its defaults (for the tests that hold the documentation to the schema).
    #[cfg(test)]
    pub(crate) fn every_kind() -> Vec<QuiescerSection> {
        let every = vec![
            QuiescerSection::Mariadb(MariadbSection::default()),
            QuiescerSection::Postgresql(PostgresqlSection::default()),
            QuiescerSection::Redis(RedisSection::default()),
            QuiescerSection::Systemd(SystemdSection::default()),
        ];
        // A new kind fails to compile here: add it to the list above too.
        for kind in &every {
            match kind {
                QuiescerSection::Mariadb(_)
                | QuiescerSection::Postgresql(_)
                | QuiescerSection::Redis(_)
                | QuiescerSection::Systemd(_) => {}
            }
        }
        every
    }
}

/// `kind = "mariadb"` (or `"mysql"`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MariadbSection {
    pub(crate) socket: PathBuf,
    pub(crate) user: String,
    /// `None`: `unix_socket` authentication.
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) lock_wait_timeout: DurationText,
    pub(crate) timeout: DurationText,
}

impl Default for MariadbSection {
    fn default() -> Self {
        MariadbSection {
            socket: DEFAULT_MARIADB_SOCKET.into(),
            user: DEFAULT_MARIADB_USER.into(),
            password_file: None,
            lock_wait_timeout: DEFAULT_LOCK_WAIT_TIMEOUT.into(),
            timeout: DEFAULT_QUIESCER_TIMEOUT.into(),
        }
    }
}

/// `kind = "postgresql"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PostgresqlSection {
    pub(crate) socket_dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) os_user: String,
    pub(crate) checkpoint: bool,
    pub(crate) timeout: DurationText,
}

impl Default for PostgresqlSection {
    fn default() -> Self {
        PostgresqlSection {
            socket_dir: DEFAULT_POSTGRESQL_SOCKET_DIR.into(),
            port: DEFAULT_POSTGRESQL_PORT,
            os_user: DEFAULT_POSTGRESQL_OS_USER.into(),
            checkpoint: DEFAULT_CHECKPOINT,
            timeout: DEFAULT_QUIESCER_TIMEOUT.into(),
        }
    }
}

/// `kind = "redis"`: `socket` or `address`, not both; neither is the default address.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RedisSection {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) address: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) timeout: DurationText,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            socket: None,
            address: None,
            password_file: None,
            timeout: DEFAULT_QUIESCER_TIMEOUT.into(),
        }
    }
}

/// `kind = "systemd"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SystemdSection {
    /// Required; missing, it is refused with an example.
    pub(crate) unit: Option<String>,
    pub(crate) mode: String,
    pub(crate) timeout: DurationText,
}

impl Default for SystemdSection {
    fn default() -> Self {
        SystemdSection {
            unit: None,
            mode: DEFAULT_UNIT_MODE.into(),
            timeout: DEFAULT_QUIESCER_TIMEOUT.into(),
        }
    }
}

/// A duration, parsed when read, with the text as written for messages (`"999h"` is out of
/// range). A bare number is refused with the form it needs, since TOML's own message
/// ("expected a string") does not say it.
#[derive(Debug, Clone)]
pub(crate) struct DurationText {
    pub(crate) value: Duration,
    pub(crate) text: String,
}

impl PartialEq for DurationText {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl From<Duration> for DurationText {
    fn from(value: Duration) -> Self {
        DurationText {
            value,
            text: humantime::format_duration(value).to_string(),
        }
    }
}

impl Serialize for DurationText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.value))
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a duration as a string with its unit, like "20s", "1500ms" or "2m""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText {
                    value: super::duration(v).map_err(E::custom)?,
                    text: v.trim().to_string(),
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    r#"`{v}` has no unit: write a duration as a string with its unit, like "{v}s" or "{v}ms""#
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    r#"`{v}` has no unit: write a duration as a string with its unit, like "1500ms""#
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
