//! freezeframe-agent: database-consistent live snapshots. Quiesces applications, flushes and
//! freezes the filesystems under a thaw guard, asks the provider for a snapshot, and thaws as
//! soon as the request has registered. See ARCHITECTURE.md for the map.

#![warn(unreachable_pub, missing_docs)]

/// A named fault-injection point (`fail::fail_point!`), driven by the FAILPOINTS environment
/// variable when the `failpoints` feature is on (the tests turn it on), and nothing at all
/// otherwise: release builds neither link `fail` nor pay for a lookup inside the window.
macro_rules! fault_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
}

pub mod atomic_file;
mod blocking;
mod checks;
pub mod config;
mod dbus;
pub mod errors;
pub mod freeze;
pub mod guard;
pub mod history;
pub mod job;
#[cfg(test)]
mod layering;
pub mod log;
mod logind;
pub mod loop_mount;
pub mod metrics;
mod millis;
pub mod naming;
pub mod notify;
pub mod provider;
mod quiesce;
pub mod render;
pub mod runtime;
pub mod secret;
pub mod service;
pub mod stdout;
mod systemd;
pub mod transaction;
pub mod verify;
