//! `freezeframe doctor`: every check a snapshot depends on, each as pass or fail with the fix,
//! from the bus to the freeze path itself.

use crate::agent::Exit;
use crate::client::{self, Agent1Proxy, Target};
use freezeframe_agent::service::{wire, AgentError, AgentStatus, Check};

fn line(ok: bool, name: &str, detail: &str, fix: &str) {
    crate::outln!("{} {name}: {detail}", if ok { "✓" } else { "✗" });
    if !ok && !fix.is_empty() {
        crate::outln!("    fix: {fix}");
    }
}

/// Prints the checks; the exit says whether all passed (3 when the agent is out of reach).
pub(crate) async fn run(target: &Target) -> Exit {
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
    if let Err(exit) = agent_answers(&agent).await {
        return exit;
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
        let c: Check = wire::from_dict(c).unwrap_or_else(|e| Check {
            name: "checks".into(),
            ok: false,
            detail: format!("an answer not understood ({e})"),
            fix: "install the same version of freezeframe and freezeframe-agent".into(),
        });
        all_ok &= c.ok;
        line(c.ok, &c.name, &c.detail, &c.fix);
    }
    if all_ok {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// Whether the agent answers `Status`, and is not frozen now; prints what it found.
async fn agent_answers(agent: &Agent1Proxy<'_>) -> Result<(), Exit> {
    match agent.status().await {
        Ok(status) => {
            let status: Option<AgentStatus> = wire::from_dict(&status).ok();
            let version = status.as_ref().map_or("?", |s| s.version.as_str());
            line(true, "agent", &format!("freezeframe-agent {version} answers"), "");
            if status.is_some_and(|s| s.frozen) {
                line(
                    false,
                    "frozen now",
                    "a run's filesystems are frozen",
                    "wait for the run, or `freezeframe thaw` on the machine if its agent died",
                );
            }
            Ok(())
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
            Err(if missing { Exit::Unreachable } else { Exit::Failed })
        }
    }
}
