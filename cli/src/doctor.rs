//! `freezeframe doctor`: every check a snapshot depends on, each as pass or fail with the fix,
//! from the bus to the freeze path itself.

use crate::client::{self, Agent1Proxy, Target};
use crate::commands::Exit;
use freezeframe_agent::service::AgentError;

fn line(ok: bool, name: &str, detail: &str, fix: &str) {
    crate::outln!("{} {name}: {detail}", if ok { "✓" } else { "✗" });
    if !ok && !fix.is_empty() {
        crate::outln!("    fix: {fix}");
    }
}

/// Prints the checks; the exit says whether all passed (3 when the agent is out of reach).
pub async fn run(target: &Target) -> Exit {
    let connection = match client::connect(target).await {
        Ok(c) => c,
        Err(e) => {
            let fix = match target {
                Target::Local => "this machine has no system bus running: start it \
                                  (`systemctl start dbus`), or check another machine with -H HOST"
                    .to_string(),
                Target::Bus(address) => format!("nothing answers D-Bus at {address}: check the address"),
                // Over SSH the message already says which step failed, and its fix.
                Target::Remote { .. } => String::new(),
            };
            line(false, "bus", &e.to_string(), &fix);
            return Exit::Unreachable;
        }
    };
    let reached = match target {
        Target::Local => "connected to this machine's system bus".to_string(),
        Target::Bus(address) => format!("connected to the bus at {address}"),
        Target::Remote { host, .. } => format!("connected to {host}'s system bus over ssh"),
    };
    line(true, "bus", &reached, "");
    let agent = match Agent1Proxy::new(&connection).await {
        Ok(a) => a,
        Err(e) => {
            line(false, "agent", &e.to_string(), "");
            return Exit::Unreachable;
        }
    };
    match agent.status().await {
        Ok(status) => {
            let version = status
                .get("version")
                .and_then(|v| v.downcast_ref::<&str>().ok())
                .unwrap_or("?");
            line(true, "agent", &format!("freezeframe-agent {version} answers"), "");
            let frozen = status.get("frozen").and_then(|v| v.downcast_ref::<bool>().ok());
            if frozen == Some(true) {
                line(
                    false,
                    "frozen now",
                    "a run's filesystems are frozen",
                    "wait for the run, or `freezeframe thaw` on the machine if its agent died",
                );
            }
        }
        Err(e) => {
            let missing = matches!(&e, AgentError::ZBus(e) if client::is_missing_agent(e));
            line(
                false,
                "agent",
                &e.to_string(),
                if missing {
                    "install the freezeframe-agent package (it is D-Bus activated)"
                } else {
                    "run as root or as a member of the group `freezeframe` (or, for a read-only \
                     look, set `agent.public_read = true`)"
                },
            );
            return if missing { Exit::Unreachable } else { Exit::Failed };
        }
    }
    let checks = match agent.check().await {
        Ok(checks) => checks,
        Err(e) => {
            line(false, "checks", &e.to_string(), "");
            return Exit::Failed;
        }
    };
    let mut all_ok = true;
    for c in &checks {
        let text = |key: &str| {
            c.get(key)
                .and_then(|v| v.downcast_ref::<&str>().ok())
                .unwrap_or("")
        };
        let ok = c
            .get("ok")
            .and_then(|v| v.downcast_ref::<bool>().ok())
            .unwrap_or(false);
        all_ok &= ok;
        line(ok, text("name"), text("detail"), text("fix"));
    }
    if all_ok {
        Exit::Success
    } else {
        Exit::Failed
    }
}
