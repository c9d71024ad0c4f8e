//! `freezeframe prune`: deletes a machine's snapshots past `--keep` (groups' are
//! `--keep-groups`, in [`super::group`]).

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;
use freezeframe_agent::transaction::ports::Pruned;

use super::Done;

/// Prunes the snapshots of the agent at `target` to the newest `keep`.
pub(crate) async fn run(target: &Target, keep: u32) -> Result<Done, Failure> {
    let pruned = agent::prune(target, keep).await?;
    Ok(Done {
        exit: Exit::Success,
        value: json(&pruned),
        text: pruned_text(&pruned),
        line: format!("{} snapshots deleted", pruned.len()),
    })
}

/// What prune deleted, said as such.
fn pruned_text(pruned: &[Pruned]) -> String {
    if pruned.is_empty() {
        return "nothing to delete: no more snapshots than --keep\n".into();
    }
    let mut out = format!(
        "deleted {} snapshot{}:\n",
        pruned.len(),
        if pruned.len() == 1 { "" } else { "s" }
    );
    for p in pruned {
        if p.id == p.name {
            out.push_str(&format!("  {}\n", p.name));
        } else {
            out.push_str(&format!("  {} (id {})\n", p.name, p.id));
        }
    }
    out
}
