//! Errors as one line for people: what the binaries print, and what reports and D-Bus errors
//! carry. The formatter is the DigitalOcean crate's (it depends on no freezeframe crate, so it
//! holds the one copy).

/// An error and its causes, joined with `: `.
pub(crate) use freezeframe_digitalocean::error_chain;
