//! Every configuration key's default, one constant each. The schema's `Default` (`schema.rs`)
//! is built from them, and a test holds `packaging/config/config.toml`, which documents them,
//! equal to them. Keys without a default (an empty list, or an optional key) have none here.

use std::time::Duration;

// [agent]
/// `agent.runtime_dir`: on tmpfs, never on a frozen filesystem.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/freezeframe";
/// `agent.idle_exit`.
pub(crate) const DEFAULT_IDLE_EXIT: Duration = Duration::from_secs(300);
/// `agent.public_read`.
pub(crate) const DEFAULT_PUBLIC_READ: bool = false;
/// `agent.max_prepare_timeout`.
pub(crate) const DEFAULT_MAX_PREPARE_TIMEOUT: Duration = Duration::from_secs(600);

// [freeze]
/// `freeze.max_freeze`.
pub(crate) const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(20);
/// `freeze.expedite_rcu`.
pub(crate) const DEFAULT_EXPEDITE_RCU: bool = true;
/// `freeze.probe`.
pub(crate) const DEFAULT_PROBE: bool = true;

// [snapshot]
/// `snapshot.provider`.
pub(crate) const DEFAULT_PROVIDER: &str = "digitalocean";
/// `snapshot.group_name_template`.
pub(crate) use crate::naming::DEFAULT_GROUP_TEMPLATE as DEFAULT_GROUP_NAME_TEMPLATE;
/// `snapshot.name_template`.
pub(crate) use crate::naming::DEFAULT_TEMPLATE as DEFAULT_NAME_TEMPLATE;
/// `snapshot.strategy`.
pub(crate) const DEFAULT_STRATEGY: &str = "live";

// [retention]
/// `retention.keep_last`: 0 keeps every snapshot.
pub(crate) const DEFAULT_KEEP_LAST: u32 = 0;

// [local_image]
/// `local_image.image_dir`.
pub(crate) const DEFAULT_IMAGE_DIR: &str = "/var/lib/freezeframe/images";

// [digitalocean]
/// `digitalocean.api_url`.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
/// `digitalocean.metadata_url`.
pub(crate) const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// `digitalocean.token_file`.
pub(crate) const DEFAULT_TOKEN_FILE: &str = "/etc/freezeframe/token";
/// `digitalocean.thaw_after`.
pub(crate) const DEFAULT_THAW_AFTER: &str = "registered";
/// `digitalocean.api_timeout`.
pub(crate) const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(15);
/// `digitalocean.volumes`.
pub(crate) const DEFAULT_VOLUMES: bool = true;
/// `digitalocean.volume_links`: where udev links DigitalOcean volumes by name.
pub(crate) const DEFAULT_VOLUME_LINKS: &str = "/dev/disk/by-id";

// [verify]
/// `verify.schedule`: no scheduled drill.
pub(crate) const DEFAULT_DRILL_SCHEDULE: &str = "off";
/// `verify.token_file`.
pub(crate) const DEFAULT_DRILL_TOKEN_FILE: &str = "/etc/freezeframe/drill-token";
/// `verify.ssh_identity`.
pub(crate) const DEFAULT_DRILL_SSH_IDENTITY: &str = "/etc/freezeframe/drill-ssh-key";
/// `verify.size`: empty, the cheapest size whose disk fits.
pub(crate) const DEFAULT_DRILL_SIZE: &str = "";
/// `verify.state_file`.
pub(crate) const DEFAULT_DRILL_STATE_FILE: &str = "/var/lib/freezeframe/drill.json";

// [history]
/// `history.file`.
pub(crate) const DEFAULT_HISTORY_FILE: &str = "/var/lib/freezeframe/history.json";
/// `history.keep`.
pub(crate) const DEFAULT_HISTORY_KEEP: u32 = 50;

// [metrics]
/// `metrics.textfile_dir`: where Debian's prometheus-node-exporter reads.
pub(crate) const DEFAULT_TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";
/// `metrics.listen`: empty, no HTTP endpoint.
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "";

// [quiesce]
/// `quiesce.auto`.
pub(crate) const DEFAULT_AUTO: bool = true;
/// `quiesce.on_quiesce_failure`.
pub(crate) const DEFAULT_ON_QUIESCE_FAILURE: &str = "abort";
/// `quiesce.hooks_dir`.
pub(crate) const DEFAULT_HOOKS_DIR: &str = "/etc/freezeframe/hooks.d";
/// `quiesce.hook_timeout`.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// `quiesce.container_sockets`: Docker's and rootful Podman's API sockets.
pub(crate) const DEFAULT_CONTAINER_SOCKETS: &[&str] = &["/run/docker.sock", "/run/podman/podman.sock"];

// [[quiescer]]
/// Every quiescer's `timeout`: the bound on its prepare.
pub(crate) const DEFAULT_QUIESCER_TIMEOUT: Duration = Duration::from_secs(60);
/// A MariaDB/MySQL quiescer's `lock_wait_timeout`.
pub(crate) const DEFAULT_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// A MariaDB/MySQL quiescer's `socket`.
pub(crate) const DEFAULT_MARIADB_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// A MariaDB/MySQL quiescer's `user`: root over the socket, with `unix_socket` authentication.
pub(crate) const DEFAULT_MARIADB_USER: &str = "root";
/// A PostgreSQL quiescer's `socket_dir`.
pub(crate) const DEFAULT_POSTGRESQL_SOCKET_DIR: &str = "/var/run/postgresql";
/// A PostgreSQL quiescer's `port`.
pub(crate) const DEFAULT_POSTGRESQL_PORT: u16 = 5432;
/// A PostgreSQL quiescer's `os_user`.
pub(crate) const DEFAULT_POSTGRESQL_OS_USER: &str = "postgres";
/// A PostgreSQL quiescer's `checkpoint`.
pub(crate) const DEFAULT_CHECKPOINT: bool = true;
/// A Redis quiescer's `address` (where Debian's Redis listens), unless `socket` is given:
/// applied when validating, since the two exclude each other.
pub(crate) const DEFAULT_REDIS_ADDRESS: &str = "127.0.0.1:6379";
/// A systemd quiescer's `mode`.
pub(crate) const DEFAULT_UNIT_MODE: &str = "freeze";
