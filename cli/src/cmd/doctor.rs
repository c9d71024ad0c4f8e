//! `freezeframe doctor`: every check a snapshot depends on, each as pass or fail with the fix,
//! from the bus to the freeze path itself. An agent out of reach is said as every command says
//! it ([`Unreachable`]), as the failed `bus` or `agent` check.

use crate::agent::{call_failure, unreachable_of, Exit};
use crate::client::{self, Agent1Proxy, Target, Unreachable};
use crate::output::json;
use freezeframe_contract::{wire, AgentStatus, Check};

use super::Done;

/// The checks, as text (`✓`/`✗` lines with their fixes) and as `{"checks": […]}`; the exit says
/// whether all passed (3 when the agent is out of reach).
pub(crate) async fn run(target: &Target) -> Done {
    let mut checks = Vec::new();
    let exit = check(target, &mut checks).await;
    let failed = checks.iter().filter(|c| !c.ok).count();
    Done {
        exit,
        value: serde_json::json!({ "checks": json(&checks) }),
        text: checks.iter().map(line).collect(),
        line: format!("{failed} of {} checks failed", checks.len()),
    }
}

/// One check as people read it.
fn line(c: &Check) -> String {
    let mut out = format!("{} {}: {}\n", if c.ok { "✓" } else { "✗" }, c.name, c.detail);
    if !c.ok && !c.fix.is_empty() {
        out.push_str(&format!("    fix: {}\n", c.fix));
    }
    out
}

fn passed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail,
        fix: String::new(),
    }
}

/// The diagnosis of an agent out of reach, as the check it failed: `bus` when the bus was not
/// reached, else `agent`.
fn out_of_reach(checks: &mut Vec<Check>, e: Unreachable) -> Exit {
    let name = if e.cause.bus_reached() { "agent" } else { "bus" };
    checks.push(Check {
        name: name.into(),
        ok: false,
        detail: format!("{}: {}", e.cause.what(), e.detail),
        fix: e.fix.clone(),
    });
    e.exit()
}

/// Runs the checks into `checks`, stopping where the next cannot run; their exit.
async fn check(target: &Target, checks: &mut Vec<Check>) -> Exit {
    let connection = match client::connect(target).await {
        Ok(c) => c,
        Err(e) => return out_of_reach(checks, e),
    };
    checks.push(passed(
        "bus",
        match target {
            Target::Local => "connected to this machine's system bus".to_string(),
            Target::Bus(address) => format!("connected to the bus at {address}"),
            Target::Remote { host, .. } => format!("connected to {host}'s system bus over ssh"),
        },
    ));
    let agent = match Agent1Proxy::new(&connection).await {
        Ok(a) => a,
        Err(e) => return failed_call(target, checks, "agent", e.into()),
    };
    if let Err(exit) = agent_answers(target, &agent, checks).await {
        return exit;
    }
    let answers = match agent.check().await {
        Ok(answers) => answers,
        Err(e) => return failed_call(target, checks, "checks", e),
    };
    let mut all_ok = true;
    for c in &answers {
        let c: Check = match wire::from_dict(c) {
            Ok(c) => c,
            Err(e) => return out_of_reach(checks, Unreachable::not_understood(target, e)),
        };
        all_ok &= c.ok;
        checks.push(c);
    }
    if all_ok {
        Exit::Success
    } else {
        Exit::Failed
    }
}

/// A call that failed: the diagnosis when it is about reaching the agent, else check `name`
/// failed with the agent's words.
fn failed_call(
    target: &Target,
    checks: &mut Vec<Check>,
    name: &str,
    e: freezeframe_contract::AgentError,
) -> Exit {
    if let Some(unreachable) = unreachable_of(target, &e) {
        return out_of_reach(checks, unreachable);
    }
    let failure = call_failure(target, e);
    checks.push(Check {
        name: name.into(),
        ok: false,
        detail: failure.message,
        fix: String::new(),
    });
    failure.exit
}

/// Whether the agent answers `Status`, and is not frozen now.
async fn agent_answers(
    target: &Target,
    agent: &Agent1Proxy<'_>,
    checks: &mut Vec<Check>,
) -> Result<(), Exit> {
    let status = agent
        .status()
        .await
        .map_err(|e| failed_call(target, checks, "agent", e))?;
    let status: AgentStatus =
        wire::from_dict(&status).map_err(|e| out_of_reach(checks, Unreachable::not_understood(target, e)))?;
    checks.push(passed(
        "agent",
        format!("freezeframe-agent {} answers", status.version),
    ));
    if status.frozen {
        checks.push(Check {
            name: "frozen now".into(),
            ok: false,
            detail: "a run's filesystems are frozen".into(),
            fix: "wait for the run, or `freezeframe thaw` on the machine if its agent died".into(),
        });
    }
    Ok(())
}
