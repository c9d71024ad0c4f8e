//! Reaching the agent: its D-Bus API (`org.freezeframe.Agent1`) on the local system bus, on a
//! bus named by address, or on a remote machine's system bus through SSH, the way
//! `systemctl -H` does (`ssh HOST systemd-stdio-bridge` as a `unixexec` transport: no port is
//! opened on the remote machine, and SSH's own authentication is the gate).

use crate::ssh::{self, Host, Step};
use std::time::Duration;
use zbus::address::transport::{Transport, Unixexec};

/// The agent's interface, as a client sees it: generated from the agent's own definition.
pub use freezeframe_agent::service::Agent1Proxy;

/// Where the agent is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This machine's system bus (`DBUS_SYSTEM_BUS_ADDRESS`, or the standard socket).
    Local,
    /// A bus by its D-Bus address (`--bus-address`, for tests and unusual setups).
    Bus(String),
    /// Another machine, through `ssh_command [-p PORT] [USER@]HOST systemd-stdio-bridge`.
    Remote { host: Host, ssh_command: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local => f.write_str("the local agent"),
            Target::Bus(address) => write!(f, "the agent on {address}"),
            Target::Remote { host, .. } => write!(f, "{host}"),
        }
    }
}

/// The agent could not be reached: exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {target}: {reason}")]
pub struct Unreachable {
    pub target: String,
    pub reason: String,
    /// Which step failed, where that is known (over SSH).
    pub step: Option<Step>,
}

/// How long connecting, and then each call, may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the bus where the agent is.
pub async fn connect(target: &Target) -> Result<zbus::Connection, Unreachable> {
    let unreachable = |reason: String| Unreachable {
        target: target.to_string(),
        reason,
        step: None,
    };
    // Over SSH, ssh's own messages go to a file: when the handshake fails they tell why.
    let ssh_log = match target {
        Target::Remote { .. } => Some(
            tempfile::NamedTempFile::new()
                .map_err(|e| unreachable(format!("cannot make a file for ssh's messages: {e}")))?,
        ),
        _ => None,
    };
    let builder = match target {
        Target::Local => zbus::connection::Builder::system(),
        Target::Bus(address) => zbus::connection::Builder::address(address.as_str()),
        Target::Remote { host, ssh_command } => {
            // Built in code: a parsed `unixexec:` address would not decode percent-escapes.
            let log = ssh_log.as_ref().expect("made above").path();
            let (program, args) = ssh::bridge_command(ssh_command, host, log);
            let transport = Transport::Unixexec(Unixexec::new(program.into(), None, args));
            zbus::connection::Builder::address(zbus::Address::from(transport))
        }
    };
    let failed = |reason: String| match (target, &ssh_log) {
        (Target::Remote { host, .. }, Some(log)) => {
            let (step, words, fix) =
                ssh::diagnose(&std::fs::read_to_string(log.path()).unwrap_or_default(), host);
            let said = if words.is_empty() { reason } else { words };
            let what = match step {
                Step::Ssh => "ssh failed",
                Step::RemoteBus => "the host's system bus cannot be reached",
                Step::Bus => "the D-Bus handshake failed",
            };
            Unreachable {
                target: target.to_string(),
                reason: format!("{what}: {said}; {fix}"),
                step: Some(step),
            }
        }
        _ => unreachable(reason),
    };
    match tokio::time::timeout(CALL_TIMEOUT, builder.method_timeout(CALL_TIMEOUT).build()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("no answer within {CALL_TIMEOUT:?}"))),
    }
}

/// The bus daemon's own error, if `e` is one (zbus gives those their own type).
fn bus_error(e: &zbus::Error) -> Option<&zbus::fdo::Error> {
    match e {
        zbus::Error::FDO(e) => Some(e),
        _ => None,
    }
}

/// Whether `e` says the agent is not there at all (not installed, not activatable).
pub fn is_missing_agent(e: &zbus::Error) -> bool {
    matches!(
        bus_error(e),
        Some(zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_))
    )
}

/// Whether the bus's policy refused the call before it reached the agent.
pub fn is_bus_refusal(e: &zbus::Error) -> bool {
    matches!(bus_error(e), Some(zbus::fdo::Error::AccessDenied(_)))
}
