//! Reaching the agent: its D-Bus API (`org.freezeframe.Agent1`) on the local system bus, on a
//! bus named by address, or on a remote machine's system bus through SSH, the way
//! `systemctl -H` does (`ssh HOST systemd-stdio-bridge` as a `unixexec` transport: no port is
//! opened on the remote machine, and SSH's own authentication is the gate).

use crate::ssh::{self, Host, Step};
use freezeframe_contract::Exit;
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

/// Why the agent could not be reached, or not used: one diagnosis, with its fix, that every
/// command says alike (`doctor` as its `bus` or `agent` check).
#[derive(Debug, Clone, thiserror::Error)]
pub struct Unreachable {
    /// Where the agent was looked for.
    pub target: String,
    pub cause: Cause,
    /// What the bus, ssh or the agent said.
    pub detail: String,
    /// What to do about it.
    pub fix: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach {}: {}: {}",
            self.target,
            self.cause.what(),
            self.detail
        )?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// The states in which the agent cannot be reached or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No bus at the address (this machine's system bus, or `--bus-address`).
    NoBus,
    /// A step of `-H HOST`: ssh, the host's bus, the handshake.
    Ssh(Step),
    /// The bus runs, but nothing owns the agent's name and none can be activated.
    NotOnBus,
    /// The bus's policy or the agent refused this user.
    Denied,
    /// The agent does not know the call, or answered in a form this client does not read.
    TooOld,
}

impl Cause {
    /// The state in words.
    pub fn what(self) -> &'static str {
        match self {
            Cause::NoBus => "no D-Bus bus answers there",
            Cause::Ssh(Step::Ssh) => "ssh failed",
            Cause::Ssh(Step::RemoteBus) => "the host's system bus cannot be reached",
            Cause::Ssh(Step::Bus) => "the D-Bus handshake failed",
            Cause::NotOnBus => "the agent is not on the bus",
            Cause::Denied => "access denied",
            Cause::TooOld => "the agent does not understand this client (an older freezeframe-agent?)",
        }
    }

    /// Its `step` in `--json`, and in `doctor`'s check: the bus or the agent.
    pub fn step(self) -> &'static str {
        match self {
            Cause::NoBus => "bus",
            Cause::Ssh(step) => step.as_str(),
            Cause::NotOnBus => "agent",
            Cause::Denied => "authorisation",
            Cause::TooOld => "version",
        }
    }

    /// Whether the bus itself was reached (doctor's `bus` check passed).
    pub fn bus_reached(self) -> bool {
        matches!(self, Cause::NotOnBus | Cause::Denied | Cause::TooOld)
    }

    /// A refused user is the user's set-up (as a refused token is): 2; every other state 3.
    pub fn exit(self) -> Exit {
        match self {
            Cause::Denied => Exit::Usage,
            _ => Exit::Unreachable,
        }
    }
}

impl Unreachable {
    fn new(target: &Target, cause: Cause, detail: impl Into<String>) -> Unreachable {
        let fix = match (cause, target) {
            (Cause::NoBus, Target::Local) => "this machine has no system bus running: start it \
                 (`systemctl start dbus`), or check another machine with -H HOST"
                .to_string(),
            (Cause::NoBus, Target::Bus(address)) => {
                format!("nothing answers D-Bus at {address}: check --bus-address")
            }
            // Over SSH, ssh's own words and their fix come from the log (`ssh::diagnose`).
            (Cause::NoBus, Target::Remote { .. }) | (Cause::Ssh(_), _) => String::new(),
            (Cause::NotOnBus, _) => "install the package freezeframe-agent there (the bus starts \
                 it on demand from its D-Bus activation file, \
                 /usr/share/dbus-1/system-services/org.freezeframe.Agent1.service)"
                .to_string(),
            (Cause::Denied, _) => "run as root, or add the user to the group `freezeframe` (for a \
                 read-only look, set `agent.public_read = true` in the agent's configuration)"
                .to_string(),
            (Cause::TooOld, _) => "install the same version of freezeframe and freezeframe-agent".to_string(),
        };
        Unreachable {
            target: target.to_string(),
            cause,
            detail: detail.into(),
            fix,
        }
    }

    /// The agent's answer that this client cannot read: it comes from another version.
    pub fn not_understood(target: &Target, detail: impl std::fmt::Display) -> Unreachable {
        Unreachable::new(
            target,
            Cause::TooOld,
            format!("its answer is not understood ({detail})"),
        )
    }

    /// What a failed call says about reaching the agent, if it says something: `None` when the
    /// agent took the call (its own answer, such as busy or failed, is not about reaching it).
    pub fn of_call(target: &Target, e: &zbus::Error) -> Option<Unreachable> {
        let cause = match bus_error(e) {
            Some(zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)) => {
                Cause::NotOnBus
            }
            Some(zbus::fdo::Error::AccessDenied(_)) => Cause::Denied,
            Some(
                zbus::fdo::Error::UnknownMethod(_)
                | zbus::fdo::Error::UnknownInterface(_)
                | zbus::fdo::Error::UnknownObject(_)
                | zbus::fdo::Error::UnknownProperty(_),
            ) => Cause::TooOld,
            _ => return None,
        };
        Some(Unreachable::new(target, cause, said(e)))
    }

    /// The agent refused this user itself.
    pub fn denied(target: &Target, detail: &str) -> Unreachable {
        Unreachable::new(target, Cause::Denied, detail)
    }

    /// The exit it ends with.
    pub fn exit(&self) -> Exit {
        self.cause.exit()
    }
}

/// What a bus error says, without zbus's type names around it.
fn said(e: &zbus::Error) -> String {
    match bus_error(e) {
        Some(fdo) => {
            use zbus::DBusError;
            let (name, text) = (fdo.name(), fdo.description().unwrap_or_default());
            format!("{name}: {text}")
        }
        None => e.to_string(),
    }
}

/// How long connecting, and then each call, may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the bus where the agent is.
pub async fn connect(target: &Target) -> Result<zbus::Connection, Unreachable> {
    let unreachable = |reason: String| Unreachable::new(target, Cause::NoBus, reason);
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
            Unreachable {
                fix,
                ..Unreachable::new(target, Cause::Ssh(step), said)
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
