//! freezeframe-agent: database-consistent live snapshots. Quiesces applications, flushes and
//! freezes the filesystems under a thaw guard, asks the provider for a snapshot, and thaws as
//! soon as the request has registered. See ARCHITECTURE.md for the map.

#![warn(unreachable_pub, missing_docs)]

pub mod atomic_file;
mod checks;
pub mod config;
mod dbus;
pub mod errors;
pub mod freeze;
pub mod guard;
pub mod history;
pub mod job;
pub mod kernel;
pub mod log;
mod logind;
pub mod loop_mount;
pub mod metrics;
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
