//! The `freezeframe` command-line client, as a library for its binary and its tests.
//!
//! Imports run one way: `route` (where a parsed command goes) → `fleet` (one command on many
//! machines) → `cmd/` (one module per subcommand) → the shared parts: `agent` (the agent's
//! calls) → `client` (reaching its bus) → `ssh`; `api` (the DigitalOcean client); `progress` →
//! `pacing`; `output`; `args`; `blocking` (work off the async workers).

pub mod agent;
pub mod api;
pub mod args;
pub(crate) mod blocking;
pub mod client;
pub mod cmd;
pub mod fleet;
pub mod output;
pub mod pacing;
pub mod progress;
pub mod route;
pub mod ssh;
