//! `freezeframe prune`: deletes a machine's snapshots past `--keep` (groups' are
//! `--keep-groups`, in [`super::group`]).

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;
use freezeframe_contract::Pruned;

use super::Done;

/// Prunes the snapshots of the agent at `target` to the newest `keep`; with `dry_run`, lists
/// what that would delete.
pub(crate) async fn run(target: &Target, keep: u32, dry_run: bool) -> Result<Done, Failure> {
    let pruned = agent::prune(target, keep, dry_run).await?;
    Ok(Done {
        exit: Exit::Success,
        value: json(&pruned),
        text: pruned_text(&pruned, dry_run),
        line: format!(
            "{} snapshots {}",
            pruned.len(),
            if dry_run { "would be deleted" } else { "deleted" }
        ),
    })
}

/// What prune deleted (or, in a dry run, would delete), said as such.
fn pruned_text(pruned: &[Pruned], dry_run: bool) -> String {
    if pruned.is_empty() {
        return "nothing to delete: no more snapshots than --keep\n".into();
    }
    let mut out = format!(
        "{} {} snapshot{}{}:\n",
        if dry_run { "would delete" } else { "deleted" },
        pruned.len(),
        if pruned.len() == 1 { "" } else { "s" },
        if dry_run {
            " (--dry-run: nothing was deleted)"
        } else {
            ""
        }
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
