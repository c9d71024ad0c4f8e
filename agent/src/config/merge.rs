//! The configuration files merged into one TOML document, deserialized once into
//! [`ConfigFile`]: a later file's key replaces an earlier one's, tables merge key by key, and a
//! list (such as `[[quiescer]]`) is replaced whole. Each file's positions are moved past the
//! previous files' before merging, so that an error found in the merged document (an unknown
//! key, a value of the wrong type) still names the file, line and column it came from.

use super::{ConfigError, ConfigFile};
use serde::Deserialize;

use std::ops::Range;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

test_kit_pub! {
/// The files' texts, in reading order, merged and deserialized.
pub fn parse(files: &[(&Path, &str)]) -> Result<ConfigFile, ConfigError> {
    let mut merged = DeTable::new();
    // Where each file starts in the positions of the merged document.
    let mut starts = Vec::with_capacity(files.len());
    let mut end = 0;
    for (path, text) in files {
        let table = DeTable::parse(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: indent(&e.to_string()),
        })?;
        starts.push(end);
        merge(&mut merged, shift_table(table.into_inner(), end));
        // One past the end, so that even an empty file has a position of its own.
        end += text.len() + 1;
    }
    let document = toml::de::Deserializer::from(Spanned::new(0..end, merged));
    ConfigFile::deserialize(document).map_err(|e| {
        // The file whose positions hold the error's.
        let found = e.span().and_then(|span| {
            let file = starts
                .partition_point(|&start| start <= span.start)
                .checked_sub(1)?;
            let start = starts[file];
            Some((files[file], span.start - start..span.end - start))
        });
        match found {
            Some(((path, text), span)) => ConfigError::Parse {
                path: path.to_path_buf(),
                message: indent(&located(text, span, e.message())),
            },
            // toml places every error it raises; were one not placed, all the files are named.
            None => ConfigError::Parse {
                path: files
                    .iter()
                    .map(|(path, _)| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
                message: e.message().to_string(),
            },
        }
    })
}
}

/// The file, and the line in it, whose value of `key` (`section.key`; in a list of tables
/// such as `[[quiescer]]`, any of its tables' `key`) the merge kept: the last file that sets
/// it. Where no file sets the whole key (a key missing from a table), the last file that sets
/// the most of it. `None` when no file names even its section.
pub(crate) fn origin<'f>(files: &[(&'f Path, &str)], key: &str) -> Option<(&'f Path, usize)> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut best: Option<(usize, &'f Path, usize)> = None;
    for (path, text) in files {
        let Ok(table) = DeTable::parse(text) else {
            continue;
        };
        let Some((depth, at)) = deepest(table.get_ref(), &parts) else {
            continue;
        };
        // A later file that sets as much wins, as in the merge.
        if best.is_none_or(|(most, _, _)| depth >= most) {
            let line = text[..at.min(text.len())].matches('\n').count() + 1;
            best = Some((depth, path, line));
        }
    }
    best.map(|(_, path, line)| (path, line))
}

/// How many of `parts` `table` holds, and where the last of them is written.
fn deepest(table: &DeTable<'_>, parts: &[&str]) -> Option<(usize, usize)> {
    let (first, rest) = parts.split_first()?;
    let value = table.get(*first)?;
    let here = (1, value.span().start);
    let below = match value.get_ref() {
        DeValue::Table(inner) => deepest(inner, rest),
        // The last table of a list that has the key.
        DeValue::Array(items) => items.iter().rev().find_map(|item| match item.get_ref() {
            DeValue::Table(inner) => deepest(inner, rest),
            _ => None,
        }),
        _ => None,
    };
    Some(below.map_or(here, |(depth, at)| (depth + 1, at)))
}

/// Merges `later` into `earlier`: tables key by key, anything else replaced (with the later
/// file's key and position).
fn merge<'i>(earlier: &mut DeTable<'i>, later: DeTable<'i>) {
    for (key, value) in later {
        let value = match earlier.remove(key.get_ref().as_ref()) {
            Some(old) if old.get_ref().is_table() && value.get_ref().is_table() => {
                let span = value.span();
                let (DeValue::Table(mut old), DeValue::Table(new)) = (old.into_inner(), value.into_inner())
                else {
                    unreachable!("both are tables")
                };
                merge(&mut old, new);
                Spanned::new(span, DeValue::Table(old))
            }
            _ => value,
        };
        earlier.insert(key, value);
    }
}

/// `table` with every position moved `by` bytes on.
fn shift_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    table
        .into_iter()
        .map(|(key, value)| (moved(key, by), shift_value(value, by)))
        .collect()
}

fn shift_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let value = moved(value, by);
    let span = value.span();
    let inner = match value.into_inner() {
        DeValue::Table(table) => DeValue::Table(shift_table(table, by)),
        DeValue::Array(mut array) => {
            // In place: the array keeps whether it was written as `[[name]]`.
            for item in array.iter_mut() {
                let taken = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift_value(taken, by);
            }
            DeValue::Array(array)
        }
        other => other,
    };
    Spanned::new(span, inner)
}

fn moved<T>(spanned: Spanned<T>, by: usize) -> Spanned<T> {
    let span = spanned.span();
    Spanned::new(span.start + by..span.end + by, spanned.into_inner())
}

/// `message` at `span` of `text`, shown as the TOML parser shows its own errors: the line and
/// column, the line itself, and the span underlined.
fn located(text: &str, span: Range<usize>, message: &str) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].split('\n').next().unwrap_or_default();
    let number = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count();
    let width = text[start..span.end.clamp(start, line_start + line.len())]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(number.to_string().len());
    format!(
        "TOML parse error at line {number}, column {}\n{gutter} |\n{number} | {line}\n{gutter} | {}{}\n{message}",
        column + 1,
        " ".repeat(column),
        "^".repeat(width)
    )
}

/// A multi-line message indented under the line that names the file.
fn indent(message: &str) -> String {
    message.trim_end().replace('\n', "\n  ")
}
