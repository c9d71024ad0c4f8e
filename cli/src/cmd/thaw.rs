//! `freezeframe thaw`: thaws what a dead agent left frozen, through the machine's agent, or on
//! this machine directly from the runtime directory when no agent answers (the emergency case:
//! an agent that cannot start).

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;
use freezeframe_agent::runtime::Recovered;
use std::path::Path;

use super::Done;

/// Thaws on `target`; `runtime_dir` is where this machine's record is when no agent answers.
pub(crate) async fn run(target: &Target, runtime_dir: Option<&Path>) -> Result<Done, Failure> {
    let (recovered, place) = thaw(target, runtime_dir).await?;
    let exit = if recovered.failed() {
        Exit::Failed
    } else {
        Exit::Success
    };
    let (thawed, resumed) = (recovered.filesystems.len(), recovered.resumes.len());
    let line = if thawed + resumed == 0 {
        "nothing to thaw".into()
    } else {
        format!("{thawed} filesystems thawed or checked, {resumed} owed resumes run")
    };
    Ok(Done {
        exit,
        value: json(&recovered),
        text: recovered.text(&place),
        line,
    })
}

/// Thaws through the target's agent, or without one on this machine; what was done and where.
async fn thaw(target: &Target, runtime_dir: Option<&Path>) -> Result<(Recovered, String), Failure> {
    match (agent::thaw(target).await, target) {
        (Ok(recovered), _) => Ok((recovered, target.to_string())),
        (Err(f), Target::Local) if f.exit == Exit::Unreachable => {
            let dir = runtime_dir.unwrap_or(Path::new(freezeframe_agent::config::DEFAULT_RUNTIME_DIR));
            eprintln!(
                "freezeframe: {}; thawing from {} directly",
                f.message,
                dir.display()
            );
            let recovered = agent::thaw_here(dir).await?;
            Ok((recovered, dir.display().to_string()))
        }
        (Err(f), _) => Err(f),
    }
}
