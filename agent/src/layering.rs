//! The library's layering, checked from its `use` lines: no import cycle between its files, and
//! the snapshot transaction behind its ports (ARCHITECTURE.md, "Layers"). A module may use its
//! own submodules; every other edge must run one way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as the path of its file inside `src/` without `.rs` or `/mod.rs`.
type Module = String;

/// Each production file's module and source, test modules left out.
fn sources() -> BTreeMap<Module, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs" && n != "main.rs"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "cmd"))
        .map(|p| {
            (
                module_of(&root, &p),
                production_part(&std::fs::read_to_string(&p).unwrap()),
            )
        })
        .collect()
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel: PathBuf = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code without comments (a doc link is no import) and without the inline
/// `#[cfg(test)] mod tests { … }`, which comes last by convention.
fn production_part(source: &str) -> String {
    let code = match source.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &source[..at],
        None => source,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The modules `source` (the file of `module`) names through `crate::` or `super::` paths, in
/// `use` lines and inline alike, resolved to the longest known module.
fn uses(module: &str, source: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let parent = own[..own.len().saturating_sub(1)].to_vec();
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut rest = source;
        while let Some(at) = rest.find(prefix) {
            let boundary = rest[..at]
                .chars()
                .last()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':');
            let tail = &rest[at + prefix.len()..];
            rest = tail;
            if !boundary {
                continue;
            }
            for path in expand(tail) {
                let mut segments = base.iter().map(|s| s.to_string()).collect::<Vec<_>>();
                segments.extend(path);
                if let Some(target) = longest_known(&segments, known) {
                    if target != module {
                        found.insert(target);
                    }
                }
            }
        }
    }
    found
}

/// The paths a `use` tail names: `a::b::{c, d::e}` gives `a::b::c` and `a::b::d::e`.
fn expand(tail: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| {
                seg.trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect()
    };
    let head_len = tail
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(tail.len());
    let head = tail[..head_len].trim_end_matches(':');
    let mut paths = vec![ident(head)];
    if tail[head_len..].starts_with('{') {
        let group = &tail[head_len + 1..tail[head_len..].find('}').map_or(tail.len(), |e| head_len + e)];
        for item in group.split(',') {
            let mut path = ident(head);
            path.extend(ident(item.trim()));
            paths.push(path);
        }
    }
    paths
}

fn longest_known(segments: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| known.contains(candidate))
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let sources = sources();
    let known: BTreeSet<Module> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, source)| (module.clone(), uses(module, source, &known)))
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_through(start: &str, graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

fn in_layer(module: &str, layer: &str) -> bool {
    module == layer || module.starts_with(&format!("{layer}::"))
}

#[test]
fn the_reader_finds_the_edges_it_must() {
    let graph = graph();
    // Edges written three ways: a `use crate::` group, a `super::` path, an inline path.
    assert!(graph["transaction::report"].contains("transaction::ports"));
    assert!(graph["freeze"].contains("guard"), "{:?}", graph["freeze"]);
    assert!(
        graph["quiesce::owed"].contains("quiesce::hooks"),
        "{:?}",
        graph["quiesce::owed"]
    );
    assert!(graph["provider::local_image"].contains("kernel::sys"));
}

#[test]
fn no_file_imports_in_a_cycle() {
    let graph = graph();
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(m, &graph))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_transaction_sees_only_its_ports() {
    let graph = graph();
    for (module, uses) in graph.iter().filter(|(m, _)| in_layer(m, "transaction")) {
        for forbidden in [
            "freeze", "provider", "quiesce", "guard", "systemd", "config", "job", "service",
        ] {
            assert!(
                !uses.iter().any(|u| in_layer(u, forbidden)),
                "{module} imports {forbidden}: {uses:?}"
            );
        }
    }
    assert!(
        graph["transaction::ports"].is_empty(),
        "the ports import {:?}",
        graph["transaction::ports"]
    );
}

#[test]
fn configuration_depends_on_nothing_above_it() {
    let graph = graph();
    for (module, uses) in graph.iter().filter(|(m, _)| in_layer(m, "config")) {
        for used in uses.iter().filter(|u| !in_layer(u, "config")) {
            assert!(
                used == "naming" || used == "transaction::ports",
                "{module} imports {used}"
            );
        }
    }
}

#[test]
fn the_guard_uses_of_freeze_only_the_kernel_calls() {
    let graph = graph();
    for (module, uses) in graph.iter().filter(|(m, _)| in_layer(m, "guard")) {
        for used in uses.iter().filter(|u| in_layer(u, "freeze")) {
            assert!(false, "{module} imports {used}");
        }
    }
}
