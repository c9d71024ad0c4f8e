//! The documents a newcomer walks: README.md, ARCHITECTURE.md, SECURITY.md and the book in
//! `docs/` (pages in `docs/src`, listed by `SUMMARY.md`, built by `mdbook build docs` in
//! tests/run). mdBook renders a broken link or a missing heading without a word, so this checks
//! them: every relative link leads to a file that exists and, with an anchor, to a heading
//! there (the id mdBook and GitHub give it); a page of the book links only inside the book,
//! which is all the rendered site holds; every page is in SUMMARY.md and every page it names
//! exists; every `{{#include}}` names a file.

use std::collections::{BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The lines of `text` outside fenced code blocks, with their numbers (from 1).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `line` with its code spans blanked out, so that `a[i](x)` in code is not read as a link.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(' ');
        } else {
            out.push(if in_code { ' ' } else { c });
        }
    }
    out
}

/// The targets of the inline links on `line` (`[text](target)`, `![alt](target)`), without
/// an optional title.
fn link_targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut targets = Vec::new();
    let mut rest = line.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let mut depth = 0;
        let end = after.char_indices().find(|&(_, c)| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' if depth == 0 => true,
            ')' => {
                depth -= 1;
                false
            }
            _ => false,
        });
        let Some((end, _)) = end else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_string());
        rest = &after[end..];
    }
    targets
}

/// The id mdBook gives a heading (GitHub's is the same for these texts): its text without
/// markup, lowercased, letters, digits, `-` and `_` kept, whitespace made `-`.
fn heading_id(text: &str) -> String {
    let mut plain = String::new();
    let mut rest = text;
    // A link in a heading shows its text only.
    while let Some(open) = rest.find('[') {
        plain.push_str(&rest[..open]);
        let inner = &rest[open + 1..];
        match inner.find("](").zip(inner.find(')')) {
            Some((close, end)) if close < end => {
                plain.push_str(&inner[..close]);
                rest = &inner[end + 1..];
            }
            _ => {
                plain.push('[');
                rest = inner;
            }
        }
    }
    plain.push_str(rest);
    plain
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| *c != '`' && *c != '*')
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// `{{#include PATH}}` on `line`: PATH, without a line range or anchor.
fn include_of(line: &str) -> Option<&str> {
    let start = line.find("{{#include ")? + "{{#include ".len();
    let end = start + line[start..].find("}}")?;
    let path = line[start..end].trim();
    Some(path.split(':').next().unwrap_or(path))
}

/// The ids of the headings of `file`, with the files it includes outside code blocks, each
/// made unique as mdBook does (`-1`, `-2`, … for repeats).
fn heading_ids(file: &Path) -> HashSet<String> {
    fn collect(file: &Path, ids: &mut Vec<String>) {
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        for (_, line) in prose_lines(&text) {
            if let Some(included) = include_of(line) {
                collect(&file.parent().unwrap().join(included), ids);
            } else if let Some(heading) = line.strip_prefix('#') {
                let text = heading.trim_start_matches('#');
                if text.starts_with(' ') {
                    ids.push(heading_id(text));
                }
            }
        }
    }
    let mut ids = Vec::new();
    collect(file, &mut ids);
    let mut unique = HashSet::new();
    for id in ids {
        let mut candidate = id.clone();
        let mut n = 0;
        while !unique.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{id}-{n}");
        }
    }
    unique
}

/// `path` with `.` and `..` resolved in the text alone (the file need not exist).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Everything wrong with the links and includes of `file`; `book` is the book's source folder,
/// which a page inside it may not link out of.
fn problems_in(file: &Path, book: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let dir = file.parent().unwrap();
    let shown = file.display();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Some(included) = include_of(line) {
            if !dir.join(included).is_file() {
                problems.push(format!(
                    "{shown}:{}: includes {included}, which does not exist",
                    number + 1
                ));
            }
        }
    }
    for (number, line) in prose_lines(&text) {
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.to_path_buf()
            } else {
                lexical(&dir.join(path))
            };
            let at = format!("{shown}:{number}: link `{target}`");
            if file.starts_with(book) && !linked.starts_with(book) {
                problems.push(format!(
                    "{at} leaves the book, and the rendered site holds only the book: name the \
                     file in `code`, or include it"
                ));
            } else if !linked.exists() {
                problems.push(format!("{at}: {} does not exist", linked.display()));
            } else if let Some(anchor) = anchor {
                let is_page = linked.extension().is_some_and(|e| e == "md");
                if is_page && !heading_ids(&linked).contains(anchor) {
                    problems.push(format!(
                        "{at}: {} has no heading whose id is `{anchor}`",
                        linked.display()
                    ));
                }
            }
        }
    }
    problems
}

/// The pages `SUMMARY.md` names, against the pages in `book`: what is wrong.
fn summary_problems(book: &Path) -> Vec<String> {
    let summary = book.join("SUMMARY.md");
    let text = std::fs::read_to_string(&summary).unwrap();
    let named: BTreeSet<String> = prose_lines(&text)
        .into_iter()
        .flat_map(|(_, line)| link_targets(line))
        .collect();
    let pages: BTreeSet<String> = std::fs::read_dir(book)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect();
    let mut problems = Vec::new();
    for page in pages.difference(&named) {
        problems.push(format!(
            "{}: {page} is not in it, so the book does not show it",
            summary.display()
        ));
    }
    for page in named.difference(&pages) {
        problems.push(format!("{}: {page} does not exist", summary.display()));
    }
    problems
}

/// Every problem in the documents under `root`.
fn problems(root: &Path) -> Vec<String> {
    let book = root.join("docs/src");
    let mut files: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "SECURITY.md"]
        .iter()
        .map(|f| root.join(f))
        .filter(|f| f.exists())
        .collect();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&book)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    let mut found = summary_problems(&book);
    for file in &files {
        found.extend(problems_in(file, &book));
    }
    found
}

#[test]
fn every_relative_link_in_the_documents_leads_to_a_page_and_its_heading() {
    let found = problems(&root());
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The checker itself, on a small book with one of each mistake.
#[test]
fn a_broken_link_a_missing_heading_a_page_left_out_and_a_missing_include_are_each_caught() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let book = root.join("docs/src");
    std::fs::create_dir_all(&book).unwrap();
    let write = |path: &str, text: &str| std::fs::write(root.join(path), text).unwrap();
    write(
        "README.md",
        "# Top\n\nSee [a](docs/src/a.md#the-api-token) and [b](docs/src/b.md#no-such).\n",
    );
    write("SECURITY.md", "# Threat model\n\n## Who: `root`, and others\n");
    write(
        "docs/src/SUMMARY.md",
        "# Summary\n\n- [A](a.md)\n- [Gone](gone.md)\n",
    );
    write(
        "docs/src/a.md",
        "# A\n\n## The API token\n\n## The API token\n\n[again](#the-api-token-1), \
         [up](../../SECURITY.md), [self](#a)\n\n```toml\n[x](nowhere.md)\n```\n",
    );
    write(
        "docs/src/b.md",
        "{{#include ../../SECURITY.md}}\n\n[who](#who-root-and-others) [c](c.md) \
         `[code](not-a-link.md)`\n\n```toml\n{{#include ../../missing.toml}}\n```\n",
    );
    let found = problems(root);
    let expect = [
        "SUMMARY.md: b.md is not in it",
        "SUMMARY.md: gone.md does not exist",
        "SUMMARY.md:4: link `gone.md`",
        "README.md:3: link `docs/src/b.md#no-such`",
        "a.md:7: link `../../SECURITY.md` leaves the book",
        "b.md:3: link `c.md`",
        "b.md:6: includes ../../missing.toml, which does not exist",
    ];
    for problem in expect {
        assert!(
            found.iter().any(|f| f.contains(problem)),
            "not caught: {problem}\nfound:\n{}",
            found.join("\n")
        );
    }
    // Nothing else: the repeated heading's second id, a heading from an included file, links
    // in code, and the good links are all fine.
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
}

#[test]
fn the_configuration_reference_is_the_packaged_file_itself() {
    let page = std::fs::read_to_string(root().join("docs/src/configuration.md")).unwrap();
    assert!(
        page.contains("{{#include ../../packaging/config/config.toml}}"),
        "docs/src/configuration.md must include packaging/config/config.toml, not a copy of it"
    );
}
