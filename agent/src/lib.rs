//! freezeframe-agent: database-consistent live snapshots. Quiesces applications, flushes and
//! freezes the filesystems under a thaw guard, asks the provider for a snapshot, and thaws as
//! soon as the request has registered. See ARCHITECTURE.md for the map.

pub mod checks;
pub mod config;
pub mod dbus;
pub mod freeze;
pub mod guard;
pub mod job;
#[cfg(test)]
mod layering;
pub mod log;
pub mod logind;
pub mod loop_mount;
pub mod naming;
pub mod notify;
pub mod provider;
pub mod quiesce;
pub mod render;
pub mod runtime;
pub mod secret;
pub mod service;
pub mod stdout;
pub mod systemd;
pub mod transaction;
