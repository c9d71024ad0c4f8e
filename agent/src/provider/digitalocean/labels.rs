//! What a run records on its snapshots, as DigitalOcean tags that the control panel, `doctl` and
//! `freezeframe list` show: `freezeframe:<consistency>` (`application`, `filesystem`, `crash`,
//! or `offline` for `snapshot --offline`), and `freezeframe-group:<id>` on a consistency
//! group's. Tags take letters, digits, `:`, `-` and `_`, which these are.

use crate::transaction::ports::RecordedConsistency;

/// The start of the tag that records a snapshot's consistency.
pub const CONSISTENCY_TAG_PREFIX: &str = "freezeframe:";
/// The start of the tag that records a snapshot's consistency group.
pub const GROUP_TAG_PREFIX: &str = "freezeframe-group:";

/// The tag recording `level`.
pub fn consistency_tag(level: RecordedConsistency) -> String {
    format!("{CONSISTENCY_TAG_PREFIX}{}", level.as_str())
}

/// The tag recording group `id`.
pub fn group_tag(id: &str) -> String {
    format!("{GROUP_TAG_PREFIX}{id}")
}

/// The consistency `tags` record, if they record one.
pub fn recorded(tags: &[String]) -> Option<RecordedConsistency> {
    tags.iter()
        .filter_map(|t| t.strip_prefix(CONSISTENCY_TAG_PREFIX))
        .find_map(RecordedConsistency::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_survives_its_tag_and_other_tags_are_not_read_as_one() {
        for level in [
            RecordedConsistency::Offline,
            RecordedConsistency::Application,
            RecordedConsistency::Filesystem,
            RecordedConsistency::Crash,
        ] {
            assert_eq!(recorded(&["web".into(), consistency_tag(level)]), Some(level));
        }
        assert_eq!(
            recorded(&["freezeframe-verified".into(), group_tag("g0123abcd")]),
            None
        );
        assert_eq!(recorded(&["freezeframe:maybe".into()]), None);
    }
}
