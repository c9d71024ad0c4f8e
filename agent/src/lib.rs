//! freezeframe-agent: database-consistent live snapshots. Quiesces applications, flushes and
//! freezes the filesystems under a thaw guard, asks the provider for a snapshot, and thaws as
//! soon as the request has registered. See ARCHITECTURE.md for the map.
//!
//! The library is the agent's program ([`main`]) and what the `freezeframe` CLI runs on the
//! machine itself; the agent's contract with its clients (the D-Bus interface, reports, exit
//! codes) is the `freezeframe-contract` crate. Exported:
//!
//! - [`main`]: the `freezeframe-agent` program.
//! - [`thaw_leftovers`]: the emergency thaw without an agent (`freezeframe thaw`).
//! - [`publish_metrics`]: the metrics files, between runs (after a scheduled drill).
//! - [`replace_file`]: the one writer of state files (the CLI's pending power-on).
//! - [`new_group_id`], [`is_group_id`]: a consistency group's id.
//! - [`LastDrill`]: the record of the last scheduled restore drill.
//! - [`config`]: the configuration (`ConfigSources` → `Settings`), for the CLI's scheduled
//!   drill; the defaults the CLI shows (`DEFAULT_API_URL`, `DEFAULT_RUNTIME_DIR`) and
//!   `check_api_url`.
//! - [`secret`]: `read_private_file` (a token or key file, checked private; its `Secret` never
//!   prints) and `SECRET_VARIABLES`, kept out of what the CLI starts.
//! - [`stdout`]: results on stdout, ended quietly when the reader goes.
//!
//! What `verify` finds crosses to the CLI as the contract's records
//! (`freezeframe_contract::verification`); the DigitalOcean API is the
//! `freezeframe_digitalocean` crate.
//!
//! With the `test-kit` feature (the tests, the demo, the simulator and the fuzz targets; nothing
//! shipped) also the engine itself: [`freeze`], [`transaction`], [`naming`], [`kernel`],
//! [`loop_mount`], the providers (`provider`: the local-image one), and the configuration's
//! parser on its own (`config::parse`, `Settings::validate`, `config::parse_duration`).

#![warn(unreachable_pub, missing_docs)]

/// A module public to the test kit (feature `test-kit`), the crate's own otherwise. Without the
/// feature its `pub` items are the crate's alone (`unreachable_pub` allowed for that), and dead
/// code in them is found as anywhere else: what only the tests use is compiled only for them
/// (`#[cfg(any(test, feature = "test-kit"))]`).
macro_rules! test_kit_mod {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[cfg(feature = "test-kit")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "test-kit"))]
        #[allow(unreachable_pub)]
        pub(crate) mod $name;
    };
}

/// An item public to the test kit (feature `test-kit`: the fuzz targets' parser, say), the
/// crate's own otherwise: `test_kit_pub!(pub fn …)`, `test_kit_pub!(pub use …;)`.
macro_rules! test_kit_pub {
    ($(#[$attr:meta])* pub $($item:tt)*) => {
        $(#[$attr])*
        #[cfg(feature = "test-kit")]
        pub $($item)*
        $(#[$attr])*
        #[cfg(not(feature = "test-kit"))]
        pub(crate) $($item)*
    };
}

/// A named fault-injection point (`fail::fail_point!`), driven by the FAILPOINTS environment
/// variable when the `failpoints` feature is on (the tests turn it on), and nothing at all
/// otherwise: release builds neither link `fail` nor pay for a lookup inside the window.
macro_rules! fault_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}

mod atomic_file;
mod blocking;
mod checks;
mod cmd;
pub mod config;
mod container;
mod dbus;
mod errors;
test_kit_mod!(freeze);
mod guard;
mod history;
mod job;
test_kit_mod!(kernel);
mod log;
mod logind;
pub mod man;
test_kit_mod!(loop_mount);
mod metrics;
test_kit_mod!(naming);
mod notify;
test_kit_mod!(provider);
mod quiesce;
mod runtime;
pub mod secret;
mod service;
pub mod stdout;
mod systemd;
test_kit_mod!(transaction);
mod verify;

pub use cmd::{command, main};
pub use history::LastDrill;
pub use naming::{is_group_id, new_group_id};

/// Thaws what a dead agent left in `runtime_dir` (its frozen record, then the resumes it owed),
/// as `freezeframe-agent thaw` does: the way back when no agent answers. Root only.
pub async fn thaw_leftovers(
    runtime_dir: &std::path::Path,
) -> std::io::Result<freezeframe_contract::Recovered> {
    runtime::recover(runtime_dir, None, config::DEFAULT_HOOK_TIMEOUT).await
}

/// Writes the metrics files (`metrics.textfile_dir`) outside a run, holding the transaction lock
/// so no run freezes their filesystem meanwhile; waits up to 30 s for a running one.
pub async fn publish_metrics(settings: &config::Settings) {
    metrics::publish_between_runs(settings).await
}

/// Replaces `path` with `bytes`, mode exactly `mode`, atomically: the folder opened without
/// following a link others could have placed, a new file renamed over the target, both flushed.
pub fn replace_file(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    atomic_file::replace(path, bytes, mode)
}
