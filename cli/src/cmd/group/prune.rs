//! `prune --keep-groups N`: deletes every member's snapshots of the groups older than the
//! newest N, judged across all members.

use super::*;

/// The groups among `snapshots` (of every machine) older than the newest `keep`, judged by each
/// group's newest snapshot, and how many groups there are. Snapshot times have a resolution of a
/// second: a group made in the same second as the `keep`-th newest cannot be told from it, so it
/// is kept too. Only older groups go.
fn older_groups(snapshots: &[SnapshotInfo], keep: u32) -> (Vec<String>, usize) {
    let mut newest: HashMap<&str, &str> = HashMap::new();
    for s in snapshots {
        if let Some(group) = &s.group {
            let at = newest.entry(group).or_default();
            if s.created_at.as_str() > *at {
                *at = &s.created_at;
            }
        }
    }
    let mut groups: Vec<(&str, &str)> = newest.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(a.1));
    let cutoff = groups.get((keep as usize).saturating_sub(1)).map(|(_, at)| *at);
    let old = groups
        .iter()
        .filter(|(_, at)| cutoff.is_some_and(|c| *at < c))
        .map(|(g, _)| g.to_string())
        .collect();
    (old, groups.len())
}

/// `prune --keep-groups N` over the machines: the newest N groups (by their newest snapshot on
/// any machine) are kept, and every older group is deleted on every machine. Every machine is
/// listed first; one that cannot be stops the prune before anything is deleted, since a group
/// seen only in part would be judged by the part. One result (one JSON document): the groups
/// deleted (with `--dry-run`: that would be) and, per machine, what was deleted there or why not.
pub(crate) async fn prune_groups(
    cli: &Cli,
    targets: &[Target],
    keep: u32,
    dry_run: bool,
) -> Result<Done, Failure> {
    use futures_util::stream::{self, StreamExt as _};
    let parallel = cli.parallel as usize;
    let lists: Vec<_> = stream::iter(targets.iter().map(agent::list))
        .buffered(parallel)
        .collect()
        .await;
    let mut listed = Vec::new();
    for (target, list) in targets.iter().zip(lists) {
        match list {
            Ok(list) => listed.extend(list),
            Err(f) => {
                return Err(Failure {
                    message: format!(
                        "{target}: cannot list its snapshots: {}; nothing was deleted",
                        f.message
                    ),
                    ..f
                })
            }
        }
    }
    let (old, groups) = older_groups(&listed, keep);
    if old.is_empty() {
        return Ok(Done {
            exit: Exit::Success,
            value: serde_json::json!({ "groups": old, "machines": [] }),
            text: format!("nothing to delete: {groups} groups, none older than the newest {keep}\n"),
            line: String::new(),
        });
    }
    let deleted: Vec<_> = stream::iter(targets.iter().map(|t| agent::delete_groups(t, &old, dry_run)))
        .buffered(parallel)
        .collect()
        .await;
    let mut exit = Exit::Success;
    let (mut machines, mut text) = (Vec::new(), String::new());
    for (target, result) in targets.iter().zip(deleted) {
        match result {
            Ok(pruned) => {
                let (verb, key) = match dry_run {
                    true => (
                        "would be deleted (--dry-run: nothing was deleted)",
                        "would_delete",
                    ),
                    false => ("deleted", "deleted"),
                };
                text.push_str(&format!(
                    "{target}: {} snapshots of {} older groups {verb}\n",
                    pruned.len(),
                    old.len()
                ));
                if dry_run {
                    for p in &pruned {
                        text.push_str(&format!("  {}\n", p.name));
                    }
                }
                let mut machine = serde_json::Map::new();
                machine.insert("host".into(), target.to_string().into());
                machine.insert(key.into(), serde_json::json!(pruned));
                machines.push(serde_json::Value::Object(machine));
            }
            Err(f) => {
                exit = exit.max(f.exit);
                text.push_str(&format!("{target}: FAILED: {}\n", f.message));
                machines.push(serde_json::json!({
                    "host": target.to_string(), "error": f.message, "exit": f.exit, "step": f.step,
                }));
            }
        }
    }
    Ok(Done {
        exit,
        value: serde_json::json!({ "groups": old, "machines": machines }),
        text,
        line: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(group: Option<&str>, created_at: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: format!("{group:?}-{created_at}"),
            name: String::new(),
            created_at: created_at.into(),
            size_bytes: None,
            drill: None,
            group: group.map(String::from),
            consistency: None,
        }
    }

    #[test]
    fn groups_are_judged_by_their_newest_snapshot_and_same_second_ties_are_kept() {
        let listed = [
            // gold's members finished a second apart: its newest counts.
            snapshot(Some("gold"), "2026-12-04T10:00:00Z"),
            snapshot(Some("gold"), "2026-12-04T10:00:01Z"),
            // silver and bronze share a second: neither can be told the newer.
            snapshot(Some("silver"), "2026-12-04T09:00:00Z"),
            snapshot(Some("bronze"), "2026-12-04T09:00:00Z"),
            snapshot(Some("lead"), "2026-12-04T08:00:00Z"),
            // A machine's own snapshots belong to no group and are never counted.
            snapshot(None, "2026-12-04T11:00:00Z"),
        ];
        let (old, groups) = older_groups(&listed, 2);
        assert_eq!(groups, 4);
        assert_eq!(old, ["lead"], "the tie with the second newest is kept");
        let (mut old, _) = older_groups(&listed, 1);
        old.sort();
        assert_eq!(old, ["bronze", "lead", "silver"]);
        assert!(older_groups(&listed, 4).0.is_empty());
        assert!(older_groups(&listed, 9).0.is_empty(), "fewer groups than kept");
        assert!(older_groups(&[], 1).0.is_empty());
    }
}
