//! The workspace's layering (ARCHITECTURE.md, "Layers"): in every crate of the workspace, each
//! folder (top-level module) imports only what its allow list (`allow.rs`) names, and no two
//! folders import each other, directly or around a cycle. The imports are read with `syn`
//! (`graph.rs`), so no way of writing a path hides one.

mod allow;
mod graph;

use graph::{show, Crate, Edge, Module};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's top folder.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The root file of every library and binary of the workspace's members, relative to the
/// workspace (`agent/src/lib.rs`), from the members in its Cargo.toml and cargo's layout.
fn crate_roots() -> Vec<String> {
    let top = workspace();
    let manifest: toml::Table = std::fs::read_to_string(top.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut roots = Vec::new();
    for member in members.iter().map(|m| m.as_str().unwrap()) {
        let src = top.join(member).join("src");
        for file in ["lib.rs", "main.rs"] {
            if src.join(file).exists() {
                roots.push(format!("{member}/src/{file}"));
            }
        }
        let Ok(bins) = std::fs::read_dir(src.join("bin")) else {
            continue;
        };
        for bin in bins.map(|e| e.unwrap().path()) {
            let root = if bin.is_dir() { bin.join("main.rs") } else { bin };
            roots.push(root.strip_prefix(&top).unwrap().to_string_lossy().into_owned());
        }
    }
    roots.sort();
    roots
}

/// A module's folder: its top-level module (`crate` for the root itself).
fn folder(module: &Module) -> String {
    module.first().cloned().unwrap_or_else(|| "crate".into())
}

/// Whether `to` is one of the modules `allowed` names, or inside one.
fn allows(allowed: &[&str], to: &Module) -> bool {
    let to = show(to);
    allowed
        .iter()
        .any(|a| to == *a || to.starts_with(&format!("{a}::")))
}

/// What is wrong with one crate's imports against its allow list.
fn violations(krate: &Crate, layers: &[(&str, &[&str])], pending_cycles: &[(&str, &str)]) -> Vec<String> {
    let mut wrong = Vec::new();
    // The root is no folder: it may use all of them.
    let folders: BTreeSet<String> = krate.modules().filter(|m| !m.is_empty()).map(folder).collect();
    let listed: BTreeMap<&str, &[&str]> = layers.iter().copied().collect();
    for f in &folders {
        if !listed.contains_key(f.as_str()) {
            wrong.push(format!("folder `{f}` has no allow list: add what it may import"));
        }
    }
    for f in listed.keys().filter(|f| !folders.contains(**f)) {
        wrong.push(format!("the allow list names a folder `{f}` that is not there"));
    }
    let edges = krate.edges();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in edges.iter().filter(|e| folder(&e.from) != folder(&e.to)) {
        graph
            .entry(folder(&edge.from))
            .or_default()
            .insert(folder(&edge.to));
        let allowed = listed
            .get(folder(&edge.from).as_str())
            .copied()
            .unwrap_or_default();
        if !allows(allowed, &edge.to) {
            wrong.push(format!("{edge}: not in {}'s allow list", folder(&edge.from)));
        }
    }
    for cycle in cycles(&graph) {
        let pending = pending_cycles.iter().any(|(a, b)| {
            cycle.len() == 3 && cycle.contains(&a.to_string()) && cycle.contains(&b.to_string())
        });
        if !pending {
            wrong.push(format!("folders import each other: {}", cycle.join(" → ")));
        }
    }
    for (a, b) in pending_cycles {
        let there =
            graph.get(*a).is_some_and(|s| s.contains(*b)) && graph.get(*b).is_some_and(|s| s.contains(*a));
        if !there {
            wrong.push(format!(
                "the cycle {a} ↔ {b} is gone: remove it from PENDING_CYCLES"
            ));
        }
    }
    wrong
}

/// One cycle through each folder that is on one (as `a → b → a`), each reported once.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        if found.iter().any(|c| c.contains(start)) {
            continue;
        }
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        'search: while let Some(path) = stack.pop() {
            for next in graph.get(path.last().unwrap()).into_iter().flatten() {
                if next == start {
                    found.push([path.clone(), vec![start.clone()]].concat());
                    break 'search;
                }
                if seen.insert(next.clone()) {
                    stack.push([path.clone(), vec![next.clone()]].concat());
                }
            }
        }
    }
    found
}

#[test]
fn every_crate_keeps_its_layers() {
    let top = workspace();
    let roots = crate_roots();
    let mut wrong = Vec::new();
    for root in &roots {
        let Some((_, layers)) = allow::CRATES.iter().find(|(r, _)| r == root) else {
            wrong.push(format!(
                "{root}: no allow list in tests/layering/allow.rs: add one"
            ));
            continue;
        };
        let krate = Crate::load(&top.join(root)).unwrap();
        let pending: Vec<(&str, &str)> = allow::PENDING_CYCLES
            .iter()
            .filter(|(r, _, _)| r == root)
            .map(|(_, a, b)| (*a, *b))
            .collect();
        let top = format!("{}/", top.display());
        wrong.extend(
            violations(&krate, layers, &pending)
                .into_iter()
                .map(|w| format!("{root}: {}", w.replace(&top, ""))),
        );
    }
    for (root, _) in allow::CRATES
        .iter()
        .filter(|(r, _)| !roots.iter().any(|x| x == r))
    {
        wrong.push(format!(
            "{root}: an allow list for a crate that is not in the workspace"
        ));
    }
    assert!(wrong.is_empty(), "layering:\n{}", wrong.join("\n"));
}

/// Prints every crate's folder edges (`cargo test -p freezeframe-tests --test layering --
/// --ignored --nocapture`), to write or review an allow list.
#[test]
#[ignore]
fn print_the_edges() {
    let top = workspace();
    for root in crate_roots() {
        let krate = Crate::load(&top.join(&root)).unwrap();
        let mut by_folder: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for edge in krate.edges().iter().filter(|e| folder(&e.from) != folder(&e.to)) {
            by_folder
                .entry(folder(&edge.from))
                .or_default()
                .insert(show(&edge.to));
        }
        println!("{root}");
        for (f, to) in by_folder {
            println!("    {f} → {}", to.into_iter().collect::<Vec<_>>().join(", "));
        }
    }
}

#[cfg(test)]
mod tests;

/// Edges found in sources given in memory, as `from → to` (for the reader's tests).
#[cfg(test)]
fn edges_of(sources: &[(&str, &str)]) -> Vec<String> {
    Crate::from_sources(sources)
        .edges()
        .iter()
        .map(|e: &Edge| format!("{} → {}", show(&e.from), show(&e.to)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
