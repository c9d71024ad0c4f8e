//! `freezeframe list`: the snapshots of a machine (of one group with `--group`), as a table.

use crate::agent::{self, Exit, Failure};
use crate::client::Target;
use crate::output::json;
use freezeframe_contract::{DrillResult, SnapshotInfo};

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
        let size = s.size_bytes.map_or_else(|| "-".into(), human_size);
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

/// A size in the unit that keeps it between 1 and 1000 (decimal, as DigitalOcean counts its GB):
/// one decimal below 10, none above, so a 20 MB snapshot reads `20 MB`, not `0.0 GB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 9.95 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.0} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_in_the_unit_that_fits_them() {
        for (bytes, said) in [
            (0, "0 B"),
            (999, "999 B"),
            (1_000, "1.0 kB"),
            (20_000_000, "20 MB"),
            (20_971_520, "21 MB"),
            (999_960, "1.0 MB"),
            (1_500_000_000, "1.5 GB"),
            (25_000_000_000, "25 GB"),
            (3_200_000_000_000, "3.2 TB"),
        ] {
            assert_eq!(human_size(bytes), said, "{bytes}");
        }
    }
}
