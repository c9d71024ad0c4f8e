//! Snapshot names from a template, such as the default
//! `{hostname}-{utc:%Y%m%d-%H%M%S}-{consistency}`, so a name tells where, when, and how
//! consistent. The same template recognises the names it made, which is how retention knows
//! which snapshots are freezeframe's to delete.

use crate::transaction::ports::{Consistency, OwnedNames, SnapshotNamer};
use std::time::SystemTime;

/// The default template.
pub(crate) const DEFAULT_TEMPLATE: &str = "{hostname}-{utc:%Y%m%d-%H%M%S}-{consistency}";
/// The default template of a consistency group's snapshots.
pub(crate) const DEFAULT_GROUP_TEMPLATE: &str = "{hostname}-{utc:%Y%m%d-%H%M%S}-{group}-{consistency}";

/// A group id: `g` and eight lowercase hexadecimal digits, made by the coordinator.
const GROUP_ID_LEN: usize = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Hostname,
    /// A strftime-style format with `%Y %m %d %H %M %S %%`.
    Utc(String),
    Consistency,
    /// A consistency group's id.
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A parsed `snapshot.name_template`: literals and placeholders.
pub struct NameTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad name template `{template}`: {problem}; placeholders are {{hostname}}, {{utc:FORMAT}} (with %Y %m %d %H %M %S), {{consistency}} and, for groups, {{group}}")]
/// A template that does not parse, and why.
pub struct TemplateError {
    template: String,
    problem: TemplateProblem,
}

impl TemplateError {
    /// What is wrong with it.
    pub fn problem(&self) -> &TemplateProblem {
        &self.problem
    }
}

/// What is wrong with a name template, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    /// A `{` without its `}`.
    #[error("a `{{` is not closed")]
    Unclosed,
    /// A `}` without its `{`.
    #[error("a `}}` has no `{{`")]
    Unopened,
    /// Nothing at all.
    #[error("it is empty")]
    Empty,
    /// `{name}` that is no placeholder.
    #[error("unknown placeholder `{{{0}}}`")]
    UnknownPlaceholder(String),
    /// `{utc:}`.
    #[error("`{{utc:}}` has no format: write e.g. `{{utc:%Y%m%d-%H%M%S}}`")]
    EmptyTimeFormat,
    /// A `%` field other than `%Y %m %d %H %M %S`.
    #[error("`%{field}` is not a supported time field: write `{{utc:{instead}}}` instead")]
    TimeField {
        /// The letter after `%` (a space when there is none).
        field: char,
        /// The format with what a name may not hold taken out.
        instead: String,
    },
    /// A character between a time's fields that a name may not hold.
    #[error(
        "`{character}` in `{{utc:{format}}}`: between its fields a time format uses only letters, \
         digits, `.`, `_` and `-` (other characters, such as `:`, were accepted before \
         and are refused since, so no snapshot is taken until the template changes): \
         write `{{utc:{instead}}}` instead"
    )]
    TimeCharacter {
        /// The character.
        character: char,
        /// The format as written.
        format: String,
        /// The format with what a name may not hold taken out.
        instead: String,
    },
    /// Names longer than the API takes.
    #[error(
        "it renders names of {length} characters, such as `{example}`, and a snapshot name \
         has at most {MAX_NAME_LEN}: shorten the template"
    )]
    TooLong {
        /// The longest name's length.
        length: usize,
        /// That name.
        example: String,
    },
    /// A character outside placeholders that a name may not hold.
    #[error(
        "outside placeholders use only letters, digits, `.`, `_` and `-` (it renders names \
         such as `{example}`)"
    )]
    Character {
        /// A name it renders.
        example: String,
    },
    /// Names that start with something other than a letter or digit.
    #[error(
        "it renders names such as `{example}`, and a snapshot name starts with a letter or \
         digit: begin the template with a letter, a digit or {{hostname}}"
    )]
    Start {
        /// A name it renders.
        example: String,
    },
}

impl std::str::FromStr for NameTemplate {
    type Err = TemplateError;

    fn from_str(template: &str) -> Result<Self, TemplateError> {
        let bad = |problem: TemplateProblem| TemplateError {
            template: template.to_string(),
            problem,
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| bad(TemplateProblem::Unclosed))?;
                    let name = &rest[1..end];
                    parts.push(match name {
                        "hostname" => Part::Hostname,
                        "consistency" => Part::Consistency,
                        "group" => Part::Group,
                        _ => match name.strip_prefix("utc:") {
                            Some(fmt) => {
                                check_format(fmt).map_err(bad)?;
                                Part::Utc(fmt.to_string())
                            }
                            None => return Err(bad(TemplateProblem::UnknownPlaceholder(name.to_string()))),
                        },
                    });
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    parts.push(Part::Literal(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        if parts
            .iter()
            .any(|p| matches!(p, Part::Literal(l) if l.contains('}')))
        {
            return Err(bad(TemplateProblem::Unopened));
        }
        if parts.is_empty() {
            return Err(bad(TemplateProblem::Empty));
        }
        let parsed = NameTemplate { parts };
        // Whatever the host: a name starting with `.`, `-` or `_` (or `.`, `..`, which the
        // local-image provider would join to its folder), or too long without the host name.
        parsed.check_renders(SHORTEST_HOST).map_err(bad)?;
        Ok(parsed)
    }
}

/// The host name a template is first tried with: the shortest there is.
const SHORTEST_HOST: &str = "h";

/// A `{utc:…}` format: fields from `%Y %m %d %H %M %S`, and between them only what a literal
/// part may hold (letters, digits, `.`, `_`, `-`): the name goes into an API call and, for
/// local images, a file name, so neither `/` nor free text may come through the time.
fn check_format(fmt: &str) -> Result<(), TemplateProblem> {
    if fmt.is_empty() {
        return Err(TemplateProblem::EmptyTimeFormat);
    }
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd' | 'H' | 'M' | 'S') => {}
                other => {
                    return Err(TemplateProblem::TimeField {
                        field: other.unwrap_or(' '),
                        instead: plain_format(fmt),
                    })
                }
            }
        } else if !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            return Err(TemplateProblem::TimeCharacter {
                character: c,
                format: fmt.to_string(),
                instead: plain_format(fmt),
            });
        }
    }
    Ok(())
}

/// `fmt` with what a name may not hold taken out: `:` and `%%` dropped, any other such
/// character made `-`; the default's format if nothing is left.
fn plain_format(fmt: &str) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                if let Some(f @ ('Y' | 'm' | 'd' | 'H' | 'M' | 'S')) = chars.next() {
                    out.push('%');
                    out.push(f);
                }
            }
            ':' => {}
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') => out.push(c),
            _ if out.ends_with('-') => {}
            _ => out.push('-'),
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.contains('%') {
        out
    } else {
        "%Y%m%d-%H%M%S".into()
    }
}

/// UTC calendar fields of `t`: year, month, day, hour, minute, second.
fn utc_fields(t: SystemTime) -> [u64; 6] {
    // "2026-11-27T23:51:01Z"
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let n = |a: usize, b: usize| text.get(a..b).and_then(|s| s.parse().ok()).unwrap_or(0);
    [n(0, 4), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19)]
}

impl NameTemplate {
    /// Whether every name this template makes for `host` is one the API (and the local-image
    /// folder) accepts: rendered with each consistency, a group id and a four-digit year, the
    /// longest it renders, and checked with [`check_name`]. The problem, in words, if not.
    pub(crate) fn check_renders(&self, host: &str) -> Result<(), TemplateProblem> {
        // 2026-11-27T23:51:01Z: every field two digits, the year four, as in any year to 9999.
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_823_461);
        let group = self.has_group().then_some("g00000000");
        for consistency in crate::transaction::ports::Consistency::ALL {
            let name = self.render(host, at, consistency, group);
            if check_name(&name).is_err() {
                return Err(if name.len() > MAX_NAME_LEN {
                    TemplateProblem::TooLong {
                        length: name.len(),
                        example: name,
                    }
                } else if name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                    TemplateProblem::Character { example: name }
                } else {
                    TemplateProblem::Start { example: name }
                });
            }
        }
        Ok(())
    }

    /// Whether names from this template carry a group id.
    pub(crate) fn has_group(&self) -> bool {
        self.parts.contains(&Part::Group)
    }

    /// The name for a snapshot of `host` taken at `at` with `consistency`, in `group` if any.
    pub(crate) fn render(
        &self,
        host: &str,
        at: SystemTime,
        consistency: Consistency,
        group: Option<&str>,
    ) -> String {
        self.render_as_given(self.fitted_host(host), at, consistency, group)
    }

    /// `host` as this template's names carry it: cut, at a letter or digit, so that every name
    /// fits the length the API takes whatever its consistency and group. Host names a provider
    /// makes (`ubuntu-s-1vcpu-1gb-35gb-intel-sfo3-01`) can be long enough to need it; the cut
    /// is the same for every run, so retention still knows the names.
    fn fitted_host<'h>(&self, host: &'h str) -> &'h str {
        let count = self.parts.iter().filter(|p| **p == Part::Hostname).count();
        if count == 0 {
            return host;
        }
        // Every field of a time has a fixed width, so any moment gives the longest rest.
        let group = self.has_group().then_some("g00000000");
        let rest = Consistency::ALL
            .iter()
            .map(|c| self.render_as_given("", SystemTime::UNIX_EPOCH, *c, group).len())
            .max()
            .unwrap_or(0);
        // Never cut to nothing: a template too long without its host name is refused whole.
        let budget = (MAX_NAME_LEN.saturating_sub(rest) / count).max(1);
        if host.len() <= budget {
            return host;
        }
        let mut end = budget;
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        let cut = host[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if cut.is_empty() {
            &host[..end]
        } else {
            cut
        }
    }

    /// The name with `host` as it is given.
    fn render_as_given(
        &self,
        host: &str,
        at: SystemTime,
        consistency: Consistency,
        group: Option<&str>,
    ) -> String {
        let [y, mo, d, h, mi, s] = utc_fields(at);
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Hostname => out.push_str(host),
                Part::Consistency => out.push_str(consistency.as_str()),
                Part::Group => out.push_str(group.unwrap_or_default()),
                Part::Utc(fmt) => {
                    let mut chars = fmt.chars();
                    while let Some(c) = chars.next() {
                        if c != '%' {
                            out.push(c);
                            continue;
                        }
                        match chars.next() {
                            Some('Y') => out.push_str(&format!("{y:04}")),
                            Some('m') => out.push_str(&format!("{mo:02}")),
                            Some('d') => out.push_str(&format!("{d:02}")),
                            Some('H') => out.push_str(&format!("{h:02}")),
                            Some('M') => out.push_str(&format!("{mi:02}")),
                            Some('S') => out.push_str(&format!("{s:02}")),
                            _ => out.push('%'),
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether `name` is one this template makes for `host`.
    pub(crate) fn matches(&self, host: &str, name: &str) -> bool {
        match_parts(&self.parts, self.fitted_host(host), name, &mut None)
    }

    /// The group id in `name`, when this template made it for `host` and it has one.
    pub(crate) fn group_of(&self, host: &str, name: &str) -> Option<String> {
        let mut group = None;
        match_parts(&self.parts, self.fitted_host(host), name, &mut group)
            .then_some(group)
            .flatten()
    }
}

/// Whether `name` is what `parts` render for `host`; a group id met on the way goes to `group`.
fn match_parts(parts: &[Part], host: &str, name: &str, group: &mut Option<String>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return name.is_empty();
    };
    match first {
        Part::Literal(l) => name
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_parts(rest, host, r, group)),
        Part::Hostname => name
            .strip_prefix(host)
            .is_some_and(|r| match_parts(rest, host, r, group)),
        Part::Consistency => Consistency::ALL.iter().any(|c| {
            name.strip_prefix(c.as_str())
                .is_some_and(|r| match_parts(rest, host, r, group))
        }),
        Part::Utc(fmt) => match_time(fmt, name).is_some_and(|r| match_parts(rest, host, r, group)),
        Part::Group => {
            let Some(id) = name.get(..GROUP_ID_LEN).filter(|id| is_group_id(id)) else {
                return false;
            };
            let matched = match_parts(rest, host, &name[GROUP_ID_LEN..], group);
            if matched {
                *group = Some(id.to_string());
            }
            matched
        }
    }
}

/// Whether `id` is a group id as [`new_group_id`] makes them.
pub fn is_group_id(id: &str) -> bool {
    id.len() == GROUP_ID_LEN
        && id.starts_with('g')
        && id[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new group id, `g` and eight random lowercase hexadecimal digits: unique enough to tell a
/// group's snapshots from every other group's of the same machines.
pub fn new_group_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is keyed from the operating system's random source.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("g{:08x}", hasher.finish() as u32)
}

/// Consumes what `fmt` renders to (digits for fields); returns the rest of `name`.
fn match_time<'a>(fmt: &str, mut name: &'a str) -> Option<&'a str> {
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        let width = if c == '%' {
            match chars.next()? {
                'Y' => 4,
                '%' => {
                    name = name.strip_prefix('%')?;
                    continue;
                }
                _ => 2,
            }
        } else {
            let mut buf = [0u8; 4];
            name = name.strip_prefix(&*c.encode_utf8(&mut buf))?;
            continue;
        };
        let digits = name.get(..width)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        name = &name[width..];
    }
    Some(name)
}

/// The names a template makes for one host: which snapshots retention may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnNames {
    /// The configured template.
    pub template: NameTemplate,
    /// This machine's host name, as the template renders it.
    pub host: String,
}

impl OwnedNames for OwnNames {
    fn is_ours(&self, name: &str) -> bool {
        self.template.matches(&self.host, name)
    }
}

/// A machine's snapshots of the given consistency groups: what group retention deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsNamed {
    /// `snapshot.group_name_template`.
    pub template: NameTemplate,
    /// This machine's host name, as the template renders it.
    pub host: String,
    /// The groups' ids.
    pub groups: Vec<String>,
}

impl OwnedNames for GroupsNamed {
    fn is_ours(&self, name: &str) -> bool {
        self.template
            .group_of(&self.host, name)
            .is_some_and(|g| self.groups.contains(&g))
    }
}

/// What to call the snapshot: a name given as is, or a template rendered at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotName {
    /// A name given as is (`--name`).
    Fixed(String),
    /// Rendered from the template when the consistency is known.
    Template {
        /// The template.
        template: NameTemplate,
        /// The host name it renders.
        host: String,
        /// The time it renders.
        at: SystemTime,
        /// The consistency group's id, for a member's run.
        group: Option<String>,
    },
}

impl SnapshotNamer for SnapshotName {
    fn render(&self, consistency: Consistency) -> String {
        match self {
            SnapshotName::Fixed(name) => name.clone(),
            SnapshotName::Template {
                template,
                host,
                at,
                group,
            } => template.render(host, *at, consistency, group.as_deref()),
        }
    }
}

/// This machine's host name, reduced to characters that are safe in snapshot names.
pub(crate) fn hostname() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let safe: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .collect();
    if safe.is_empty() {
        "host".into()
    } else {
        safe
    }
}

/// A snapshot name that is not one: it says what was given and what a name may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid snapshot name: use 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit")]
pub struct BadName(pub String);

/// The longest snapshot name.
const MAX_NAME_LEN: usize = 64;

/// Snapshot names: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit (so never
/// `.`, `..` or a name a command would take for an option).
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        // Shown back to the user: a long one is cut.
        Err(BadName(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at() -> SystemTime {
        // 2026-11-27T23:51:01Z
        UNIX_EPOCH + Duration::from_secs(1_795_823_461)
    }

    #[test]
    fn the_default_template_renders_where_when_and_how_consistent() {
        let t: NameTemplate = DEFAULT_TEMPLATE.parse().unwrap();
        assert_eq!(
            t.render("web-1", at(), Consistency::Application, None),
            "web-1-20261127-235101-application"
        );
        assert_eq!(
            t.render("web-1", at(), Consistency::Crash, None),
            "web-1-20261127-235101-crash"
        );
    }

    #[test]
    fn a_template_recognises_its_own_names_for_this_host_only() {
        let t: NameTemplate = DEFAULT_TEMPLATE.parse().unwrap();
        assert!(t.matches("web-1", "web-1-20261127-235101-filesystem"));
        assert!(
            !t.matches("web-1", "web-2-20261127-235101-filesystem"),
            "another host"
        );
        assert!(!t.matches("web-1", "web-1-20261127-235101-manual"));
        assert!(!t.matches("web-1", "web-1-2026112-235101-filesystem"));
        assert!(!t.matches("web-1", "web-1-20261127-235101-filesystem-copy"));
        let odd: NameTemplate = "ff-{utc:%Y.%m_}-{hostname}".parse().unwrap();
        let name = odd.render("db", at(), Consistency::Filesystem, None);
        assert_eq!(name, "ff-2026.11_-db");
        assert!(odd.matches("db", &name));
    }

    #[test]
    fn a_group_template_carries_the_group_id_and_gives_it_back() {
        let t: NameTemplate = DEFAULT_GROUP_TEMPLATE.parse().unwrap();
        assert!(t.has_group());
        let id = new_group_id();
        assert!(is_group_id(&id), "{id}");
        assert_ne!(id, new_group_id(), "random");
        let name = t.render("db-1", at(), Consistency::Application, Some(&id));
        assert_eq!(name, format!("db-1-20261127-235101-{id}-application"));
        assert_eq!(t.group_of("db-1", &name), Some(id.clone()));
        assert_eq!(t.group_of("db-2", &name), None, "another host");
        let single: NameTemplate = DEFAULT_TEMPLATE.parse().unwrap();
        assert!(
            !single.matches("db-1", &name),
            "a group's snapshot is not a single run's"
        );
        assert!(!t.matches("db-1", "db-1-20261127-235101-gxyz12345-application"));
        assert!(!t.matches("db-1", "db-1-20261127-235101-application"));
    }

    #[test]
    fn bad_templates_are_refused_with_the_placeholders_listed() {
        for bad in ["", "{host}", "{utc:%j}", "x-{hostname", "x}"] {
            let err = bad.parse::<NameTemplate>().unwrap_err().to_string();
            assert!(err.contains("{hostname}, {utc:FORMAT}"), "{bad}: {err}");
        }
    }

    #[test]
    fn text_inside_a_time_format_is_held_to_the_name_rules() {
        for hostile in [
            "{hostname}-{utc:%Y/../../etc/%m}",
            "{hostname}-{utc:%Y %m}",
            "{hostname}-{utc:%Y%%}",
            "{hostname}-{utc:x;rm -rf}",
            "{hostname}-{utc:%Y\n%m}",
            "{hostname}-{utc:%Y\u{e9}}",
            "{hostname}-{utc:%Y{x}",
            "{hostname}-{utc:}",
        ] {
            let err = hostile.parse::<NameTemplate>().unwrap_err().to_string();
            assert!(err.contains("{utc:FORMAT}"), "{hostile}: {err}");
        }
        // Every template that parses renders a name the API accepts (with a host name short
        // enough: the configuration checks this machine's).
        for fine in [
            "{hostname}-{utc:%Y%m%d-%H%M%S}",
            "x-{utc:T%H.%M_%S}-{consistency}",
        ] {
            let t: NameTemplate = fine.parse().unwrap();
            let name = t.render("db", at(), Consistency::Application, None);
            check_name(&name).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }

    /// As the attacker who writes a template (or the operator's slip): a name starting with
    /// `.`, `-` or `_`, or `.`/`..`, which the local-image provider would join to its folder,
    /// or longer than the API takes, is refused when the template is read, not at snapshot time.
    #[test]
    fn a_template_whose_names_the_api_refuses_does_not_parse() {
        for bad in [
            ".",
            "..",
            ".{hostname}",
            "-{hostname}",
            "_{utc:%Y}",
            "..{consistency}",
        ] {
            let err = bad.parse::<NameTemplate>().unwrap_err();
            assert!(matches!(err.problem(), TemplateProblem::Start { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("starts with a letter or digit"), "{bad}: {err}");
        }
        let long = format!("{}-{{consistency}}", "x".repeat(60));
        let err = long.parse::<NameTemplate>().unwrap_err();
        assert!(
            matches!(err.problem(), TemplateProblem::TooLong { length, .. } if *length > 64),
            "{err:?}"
        );
        assert!(err.to_string().contains("at most 64"), "{err}");
    }

    /// A long host name (DigitalOcean's own make them) is cut so that every name fits, the same
    /// way every time, so retention still knows the names; a short one is left whole.
    #[test]
    fn a_long_host_name_is_cut_so_that_every_name_fits_and_is_still_recognised() {
        let host = "ubuntu-s-1vcpu-1gb-35gb-intel-sfo3-01-with-a-long-suffix";
        for (text, group) in [
            (DEFAULT_TEMPLATE, None),
            (DEFAULT_GROUP_TEMPLATE, Some("g1a2b3c4d")),
            ("{hostname}.{hostname}-{consistency}", None),
        ] {
            let t: NameTemplate = text.parse().unwrap();
            t.check_renders(host).unwrap();
            for c in Consistency::ALL {
                let name = t.render(host, at(), c, group);
                check_name(&name).unwrap();
                assert!(name.starts_with("ubuntu-s-1vcpu"), "{name}");
                assert!(t.matches(host, &name), "{name}");
                assert_eq!(t.group_of(host, &name).as_deref(), group, "{name}");
                // Cut at a letter or digit, never leaving a dangling `-`.
                assert!(!name.contains("--"), "{name}");
            }
        }
        let t: NameTemplate = DEFAULT_TEMPLATE.parse().unwrap();
        assert_eq!(
            t.render("web-1", at(), Consistency::Application, None),
            "web-1-20261127-235101-application"
        );
    }

    /// A template accepted before `{utc:…}` was held to the name rules fails to load after
    /// the upgrade: the error gives the template to write instead, and that one loads.
    #[test]
    fn a_time_format_refused_since_says_what_to_write_instead() {
        for (old, fixed) in [
            ("{hostname}-{utc:%Y-%m-%dT%H:%M}", "{utc:%Y-%m-%dT%H%M}"),
            ("{hostname}-{utc:%Y%m%d %H:%M:%S}", "{utc:%Y%m%d-%H%M%S}"),
            ("{hostname}-{utc:%Y%m%d-%H%M%%}", "{utc:%Y%m%d-%H%M}"),
            ("{hostname}-{utc::}", "{utc:%Y%m%d-%H%M%S}"),
        ] {
            let err = old.parse::<NameTemplate>().unwrap_err().to_string();
            assert!(err.contains(&format!("write `{fixed}` instead")), "{old}: {err}");
            format!("{{hostname}}-{fixed}")
                .parse::<NameTemplate>()
                .unwrap_or_else(|e| panic!("{fixed}: {e}"));
        }
    }

    #[test]
    fn a_fixed_name_ignores_consistency() {
        let n = SnapshotName::Fixed("nightly".into());
        assert_eq!(n.render(Consistency::Crash), "nightly");
    }
}
