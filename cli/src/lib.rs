//! The `freezeframe` command-line client, as a library for its binary and its tests.

pub mod args;
pub mod client;
pub mod commands;
pub mod doctor;
pub mod drill;
pub mod fleet;
pub mod group;
pub mod man;
pub mod offline;
pub mod pacing;
pub mod progress;
pub mod scheduled;
pub mod ssh;

/// `println!` for results: a reader that went away (`freezeframe … | head`) ends the output
/// quietly instead of a panic on the closed pipe.
#[macro_export]
macro_rules! outln {
    () => {
        freezeframe_agent::stdout::line("")
    };
    ($($arg:tt)*) => {
        freezeframe_agent::stdout::line(&format!($($arg)*))
    };
}
