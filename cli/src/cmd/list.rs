//! `freezeframe list`: the snapshots of a machine (of one group with `--group`), as a table.

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;
use freezeframe_agent::transaction::ports::{DrillResult, SnapshotInfo};

use super::Done;

/// The snapshots of the agent at `target`, of the group `group` only when given.
pub(crate) async fn run(target: &Target, group: Option<&str>) -> Result<Done, Failure> {
    let mut list = agent::list(target).await?;
    list.retain(|s| group.is_none() || s.group.as_deref() == group);
    Ok(Done {
        exit: Exit::Success,
        value: json(&list),
        text: snapshots_text(&list),
        line: format!("{} snapshots", list.len()),
    })
}

/// A snapshot list as a table with a header; the id column only where ids are not the names.
fn snapshots_text(list: &[SnapshotInfo]) -> String {
    if list.is_empty() {
        return "no snapshots\n".into();
    }
    let with_ids = list.iter().any(|s| s.id != s.name);
    let drilled = list.iter().any(|s| s.drill.is_some());
    let recorded = list.iter().any(|s| s.consistency.is_some());
    let mut table = vec![vec!["CREATED".to_string(), "SIZE".into(), "NAME".into()]];
    if with_ids {
        table[0].push("ID".into());
    }
    if recorded {
        table[0].push("CONSISTENCY".into());
    }
    if drilled {
        table[0].push("RESTORE DRILL".into());
    }
    for s in list {
        let size = s
            .size_bytes
            .map(|b| format!("{:.1} GB", b as f64 / 1e9))
            .unwrap_or_else(|| "-".into());
        let mut row = vec![s.created_at.clone(), size, s.name.clone()];
        if with_ids {
            row.push(s.id.clone());
        }
        if recorded {
            row.push(s.consistency.map_or("-", |c| c.as_str()).into());
        }
        if drilled {
            row.push(
                match s.drill {
                    Some(DrillResult::Verified) => "verified",
                    Some(DrillResult::Failed) => "FAILED",
                    None => "-",
                }
                .into(),
            );
        }
        table.push(row);
    }
    crate::output::table(&table)
}
