//! The on-disk shape of configuration files: every key optional, unknown keys refused.
//!
//! Fragments are merged (later files win, key by key) and only then validated into
//! [`super::Settings`], so a drop-in can change one key without repeating the rest.

use serde::Deserialize;
use std::path::PathBuf;

/// One configuration file, as written.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFragment {
    pub(crate) agent: Option<AgentFragment>,
    pub(crate) freeze: Option<FreezeFragment>,
    pub(crate) snapshot: Option<SnapshotFragment>,
    pub(crate) local_image: Option<LocalImageFragment>,
    pub(crate) digitalocean: Option<DigitalOceanFragment>,
    pub(crate) retention: Option<RetentionFragment>,
    pub(crate) verify: Option<VerifyFragment>,
    pub(crate) history: Option<HistoryFragment>,
    pub(crate) metrics: Option<MetricsFragment>,
    pub(crate) quiesce: Option<QuiesceFragment>,
    /// `[[quiescer]]` entries; a later file's list replaces an earlier one's.
    pub(crate) quiescer: Option<Vec<QuiescerFragment>>,
}

/// One `[[quiescer]]`: one table per database or service, its keys set by its `kind`. Each
/// kind is its own type, so a key that does not apply to it is refused with the list of those
/// that do.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum QuiescerFragment {
    #[serde(alias = "mysql")]
    Mariadb(MariadbFragment),
    Postgresql(PostgresqlFragment),
    Redis(RedisFragment),
    Systemd(SystemdFragment),
}

/// `kind = "mariadb"` (or `"mysql"`).
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MariadbFragment {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) user: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) lock_wait_timeout: Option<DurationText>,
    pub(crate) timeout: Option<DurationText>,
}

/// `kind = "postgresql"`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostgresqlFragment {
    pub(crate) socket_dir: Option<PathBuf>,
    pub(crate) port: Option<u16>,
    pub(crate) os_user: Option<String>,
    pub(crate) checkpoint: Option<bool>,
    pub(crate) timeout: Option<DurationText>,
}

/// `kind = "redis"`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisFragment {
    pub(crate) socket: Option<PathBuf>,
    pub(crate) address: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) timeout: Option<DurationText>,
}

/// `kind = "systemd"`.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemdFragment {
    pub(crate) unit: Option<String>,
    pub(crate) mode: Option<String>,
    pub(crate) timeout: Option<DurationText>,
}

/// `[quiesce]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuiesceFragment {
    pub(crate) auto: Option<bool>,
    pub(crate) on_quiesce_failure: Option<String>,
    pub(crate) hooks_dir: Option<PathBuf>,
    pub(crate) hook_timeout: Option<DurationText>,
}

/// `[retention]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionFragment {
    pub(crate) keep_last: Option<u32>,
}

/// `[verify]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyFragment {
    pub(crate) schedule: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) ssh_identity: Option<PathBuf>,
    pub(crate) size: Option<String>,
    pub(crate) state_file: Option<PathBuf>,
}

/// `[history]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryFragment {
    pub(crate) file: Option<PathBuf>,
    pub(crate) keep: Option<u32>,
}

/// `[metrics]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsFragment {
    pub(crate) textfile_dir: Option<PathBuf>,
    pub(crate) listen: Option<String>,
}

/// `[agent]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentFragment {
    pub(crate) runtime_dir: Option<PathBuf>,
    pub(crate) idle_exit: Option<DurationText>,
    pub(crate) public_read: Option<bool>,
    pub(crate) max_prepare_timeout: Option<DurationText>,
}

/// `[freeze]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FreezeFragment {
    pub(crate) mountpoints: Option<Vec<PathBuf>>,
    pub(crate) exclude: Option<Vec<PathBuf>>,
    pub(crate) max_freeze: Option<DurationText>,
    pub(crate) expedite_rcu: Option<bool>,
    pub(crate) probe: Option<bool>,
}

/// `[snapshot]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotFragment {
    pub(crate) provider: Option<String>,
    pub(crate) name_template: Option<String>,
    pub(crate) group_name_template: Option<String>,
    pub(crate) strategy: Option<String>,
}

/// `[local_image]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalImageFragment {
    pub(crate) image_dir: Option<PathBuf>,
}

/// `[digitalocean]`
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DigitalOceanFragment {
    pub(crate) api_url: Option<String>,
    pub(crate) metadata_url: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) droplet_id: Option<u64>,
    pub(crate) thaw_after: Option<String>,
    pub(crate) api_timeout: Option<DurationText>,
    pub(crate) volumes: Option<bool>,
    pub(crate) volume_links: Option<PathBuf>,
}

/// Overlays `later` on `earlier`, key by key: a key set in `later` wins.
fn overlay<T>(earlier: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *earlier = later;
    }
}

impl ConfigFragment {
    /// Merges `later` into `self`; keys set in `later` replace those in `self` (lists too).
    pub fn merge(&mut self, later: ConfigFragment) {
        if let Some(l) = later.agent {
            let e = self.agent.get_or_insert_with(Default::default);
            overlay(&mut e.runtime_dir, l.runtime_dir);
            overlay(&mut e.idle_exit, l.idle_exit);
            overlay(&mut e.public_read, l.public_read);
            overlay(&mut e.max_prepare_timeout, l.max_prepare_timeout);
        }
        if let Some(l) = later.freeze {
            let e = self.freeze.get_or_insert_with(Default::default);
            overlay(&mut e.mountpoints, l.mountpoints);
            overlay(&mut e.exclude, l.exclude);
            overlay(&mut e.max_freeze, l.max_freeze);
            overlay(&mut e.expedite_rcu, l.expedite_rcu);
            overlay(&mut e.probe, l.probe);
        }
        if let Some(l) = later.snapshot {
            let e = self.snapshot.get_or_insert_with(Default::default);
            overlay(&mut e.provider, l.provider);
            overlay(&mut e.name_template, l.name_template);
            overlay(&mut e.group_name_template, l.group_name_template);
            overlay(&mut e.strategy, l.strategy);
        }
        if let Some(l) = later.local_image {
            let e = self.local_image.get_or_insert_with(Default::default);
            overlay(&mut e.image_dir, l.image_dir);
        }
        overlay(&mut self.quiescer, later.quiescer);
        if let Some(l) = later.quiesce {
            let e = self.quiesce.get_or_insert_with(Default::default);
            overlay(&mut e.auto, l.auto);
            overlay(&mut e.on_quiesce_failure, l.on_quiesce_failure);
            overlay(&mut e.hooks_dir, l.hooks_dir);
            overlay(&mut e.hook_timeout, l.hook_timeout);
        }
        if let Some(l) = later.retention {
            let e = self.retention.get_or_insert_with(Default::default);
            overlay(&mut e.keep_last, l.keep_last);
        }
        if let Some(l) = later.verify {
            let e = self.verify.get_or_insert_with(Default::default);
            overlay(&mut e.schedule, l.schedule);
            overlay(&mut e.token_file, l.token_file);
            overlay(&mut e.ssh_identity, l.ssh_identity);
            overlay(&mut e.size, l.size);
            overlay(&mut e.state_file, l.state_file);
        }
        if let Some(l) = later.history {
            let e = self.history.get_or_insert_with(Default::default);
            overlay(&mut e.file, l.file);
            overlay(&mut e.keep, l.keep);
        }
        if let Some(l) = later.metrics {
            let e = self.metrics.get_or_insert_with(Default::default);
            overlay(&mut e.textfile_dir, l.textfile_dir);
            overlay(&mut e.listen, l.listen);
        }
        if let Some(l) = later.digitalocean {
            let e = self.digitalocean.get_or_insert_with(Default::default);
            overlay(&mut e.api_url, l.api_url);
            overlay(&mut e.metadata_url, l.metadata_url);
            overlay(&mut e.token_file, l.token_file);
            overlay(&mut e.droplet_id, l.droplet_id);
            overlay(&mut e.thaw_after, l.thaw_after);
            overlay(&mut e.api_timeout, l.api_timeout);
            overlay(&mut e.volumes, l.volumes);
            overlay(&mut e.volume_links, l.volume_links);
        }
    }
}

/// A duration as written (`"20s"`, `"1500ms"`), parsed when validated. A bare number is refused
/// here with the form it needs, since TOML's own message ("expected a string") does not say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationText(pub String);

impl std::ops::Deref for DurationText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
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
                Ok(DurationText(v.to_string()))
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
