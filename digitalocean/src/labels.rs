//! What a run records on its snapshots, as DigitalOcean tags that the control panel, `doctl` and
//! `freezeframe list` show: `freezeframe:<consistency>` (`application`, `filesystem`, `crash`,
//! or `offline` for `snapshot --offline`), and `freezeframe-group:<id>` on a consistency
//! group's. Tags take letters, digits, `:`, `-` and `_`, which these are.

/// The start of the tag that records a snapshot's consistency.
pub const CONSISTENCY_TAG_PREFIX: &str = "freezeframe:";
/// The start of the tag that records a snapshot's consistency group.
pub const GROUP_TAG_PREFIX: &str = "freezeframe-group:";

/// The consistency a tag records. The words are the ones reports use for the same levels:
/// snapshots already tagged must keep reading back as what they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Taken while the machine was off.
    Offline,
    /// Applications quiesced and filesystems frozen across the request.
    Application,
    /// Filesystems frozen across the request.
    Filesystem,
    /// Neither: what a power cut would have left.
    Crash,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 4] = [
        Level::Offline,
        Level::Application,
        Level::Filesystem,
        Level::Crash,
    ];

    /// The level's word in its tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Offline => "offline",
            Level::Application => "application",
            Level::Filesystem => "filesystem",
            Level::Crash => "crash",
        }
    }

    /// The level `word` names, if it names one.
    fn parse(word: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == word)
    }
}

/// The tag recording `level`.
pub fn consistency_tag(level: Level) -> String {
    format!("{CONSISTENCY_TAG_PREFIX}{}", level.as_str())
}

/// The tag recording group `id`.
pub fn group_tag(id: &str) -> String {
    format!("{GROUP_TAG_PREFIX}{id}")
}

/// The consistency `tags` record, if they record one.
pub fn recorded(tags: &[String]) -> Option<Level> {
    tags.iter()
        .filter_map(|t| t.strip_prefix(CONSISTENCY_TAG_PREFIX))
        .find_map(Level::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_survives_its_tag_and_other_tags_are_not_read_as_one() {
        for level in Level::ALL {
            assert_eq!(recorded(&["web".into(), consistency_tag(level)]), Some(level));
        }
        assert_eq!(
            recorded(&["freezeframe-verified".into(), group_tag("g0123abcd")]),
            None
        );
        assert_eq!(recorded(&["freezeframe:maybe".into()]), None);
    }

    /// The tags already on snapshots, written by earlier versions.
    #[test]
    fn the_tags_are_the_ones_earlier_runs_wrote() {
        let tags: Vec<String> = Level::ALL.into_iter().map(consistency_tag).collect();
        assert_eq!(
            tags,
            [
                "freezeframe:offline",
                "freezeframe:application",
                "freezeframe:filesystem",
                "freezeframe:crash"
            ]
        );
        assert_eq!(group_tag("g0123abcd"), "freezeframe-group:g0123abcd");
    }
}
