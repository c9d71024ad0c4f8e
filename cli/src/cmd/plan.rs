//! `freezeframe plan`: what a snapshot would do on a machine, from its agent.

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;

use super::Done;

/// The plan of the agent at `target`.
pub(crate) async fn run(target: &Target) -> Result<Done, Failure> {
    let plan = agent::plan(target).await?;
    Ok(Done {
        exit: Exit::Success,
        value: json(&plan),
        text: freezeframe_agent::render::plan(&plan),
        line: "ok".into(),
    })
}
