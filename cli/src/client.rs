//! Reaching the agent: its D-Bus API (`org.freezeframe.Agent1`) on the local system bus, on a
//! bus named by address, or on a remote machine's system bus through SSH, the way
//! `systemctl -H` does (`ssh HOST systemd-stdio-bridge` as a `unixexec` transport: no port is
//! opened on the remote machine, and SSH's own authentication is the gate).

use crate::ssh::{self, Step};
use std::time::Duration;
use zbus::address::transport::{Transport, Unixexec};

/// The agent's interface, as a client sees it: generated from the agent's own definition.
pub use freezeframe_contract::Agent1Proxy;

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

/// `[USER@]HOST[:PORT]`, as `-H` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Host {
    type Err = String;

    fn from_str(text: &str) -> Result<Host, String> {
        let bad = |why: &str| format!("`{text}` is not [USER@]HOST[:PORT]: {why}");
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
            Some(_) => return Err(bad("the user before `@` is empty")),
            None => (None, text),
        };
        // [v6]:port, v6, host:port, host.
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (addr, after) = inner.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("text after `]` that is not `:PORT`")),
            };
            (addr.to_string(), port)
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').expect("one colon");
            (h.to_string(), Some(p))
        } else {
            (rest.to_string(), None)
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("the port is not 1-65535"))
            })
            .transpose()?;
        let valid = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:%".contains(c))
        };
        if !valid(&host) {
            return Err(bad("the host name has characters a host name cannot have"));
        }
        if let Some(u) = &user {
            if !valid(u) {
                return Err(bad("the user name has characters a user name cannot have"));
            }
        }
        Ok(Host { user, host, port })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_like_ssh_destinations() {
        let h: Host = "root@db1.example.com:2222".parse().unwrap();
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("root"), "db1.example.com", Some(2222))
        );
        let h: Host = "[2001:db8::1]:22".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("2001:db8::1", Some(22)));
        let h: Host = "2001:db8::1".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("2001:db8::1", None));
        assert_eq!("web".parse::<Host>().unwrap().to_string(), "web");
        for bad in [
            "",
            "@host",
            "host:0",
            "host:99999",
            "-oProxyCommand=x",
            "a b",
            "[::1",
            "u;rm@h",
        ] {
            assert!(bad.parse::<Host>().is_err(), "{bad}");
        }
    }
}
