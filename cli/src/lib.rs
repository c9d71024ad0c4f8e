//! The `freezeframe` command-line client, as a library for its binary and its tests.

pub mod demo;
pub mod scratch;
