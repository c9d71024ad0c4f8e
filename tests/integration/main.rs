//! Integration tests on real, loop-mounted ext4, xfs and btrfs filesystems. Run as root:
//! `cargo test --workspace` (see docs/src/testing.md). One test binary, so the build is shared.

mod agent_binary;
mod agent_voice;
mod cli;
mod containers;
mod contract;
mod dashboard;
mod databases;
mod demo;
mod digitalocean;
mod docs;
mod docs_browser;
mod drill;
mod droplet;
mod engine;
mod faults;
mod fleet;
mod group;
mod hooks;
mod hostile_image;
mod man_pages;
mod metrics;
mod offline;
mod one_voice;
mod packaging;
mod phases;
mod probe_attacker;
mod secrets;
mod servers;
mod service;
mod systemd_bus;
mod systemd_nspawn;
mod textfile_attacker;
