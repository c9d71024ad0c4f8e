//! The `freezeframe` command-line client, as a library for its binary and its tests.

pub mod args;
pub mod client;
pub mod commands;
pub mod demo;
pub mod doctor;
pub mod fleet;
pub mod private_bus;
pub mod scratch;
