//! The reader against the ways an import can be written, and the check against an import its
//! list does not allow and a cycle.

use super::{edges_of, violations};
use crate::graph::Crate;

/// A crate with a transaction that must not see the provider, and a deep module to climb from.
fn crate_with(transaction: &str) -> Vec<(&'static str, String)> {
    vec![
        ("", "mod transaction; mod provider;".into()),
        ("provider", "pub struct P;".into()),
        ("provider::deep", "".into()),
        ("transaction", transaction.into()),
        ("transaction::ports", "pub struct Port;".into()),
        ("transaction::ports::inner", "".into()),
    ]
}

fn edges(transaction: &str) -> Vec<String> {
    let sources = crate_with(transaction);
    let sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    edges_of(&sources)
}

#[test]
fn a_grouped_use_tree_is_read_whole() {
    assert_eq!(
        edges("use crate::{transaction::{ports}, provider::{self, P}};"),
        ["transaction → provider"]
    );
    assert_eq!(
        edges("use crate::{provider::deep::{self as d}};"),
        ["transaction → provider::deep"]
    );
}

#[test]
fn super_super_is_climbed() {
    let sources = crate_with("");
    let mut sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    sources.retain(|(m, _)| *m != "transaction::ports::inner");
    sources.push((
        "transaction::ports::inner",
        "use super::super::super::provider::P;",
    ));
    assert_eq!(edges_of(&sources), ["transaction::ports::inner → provider"]);
    sources.pop();
    sources.push((
        "transaction::ports::inner",
        "fn f() -> super::super::super::provider::P { todo!() }",
    ));
    assert_eq!(edges_of(&sources), ["transaction::ports::inner → provider"]);
}

#[test]
fn an_alias_of_the_crate_or_a_module_is_followed() {
    assert_eq!(
        edges("use crate as c; fn f() { let _ = c::provider::P; }"),
        ["transaction → crate", "transaction → provider"]
    );
    assert_eq!(
        edges("use crate as c; use c::provider as p; fn f(_: p::P) {}"),
        ["transaction → crate", "transaction → provider"]
    );
}

#[test]
fn inline_paths_in_expressions_types_and_macros_are_read() {
    assert_eq!(
        edges("fn f() { crate::provider::go(); }"),
        ["transaction → provider"]
    );
    assert_eq!(
        edges("struct S(Vec<crate::provider::P>);"),
        ["transaction → provider"]
    );
    assert_eq!(
        edges("fn f() { println!(\"{:?}\", crate::provider::P); }"),
        ["transaction → provider"]
    );
}

#[test]
fn own_submodules_tests_and_outside_crates_are_no_edges() {
    assert!(edges("use self::ports::Port; use ports::inner; use std::fmt;").is_empty());
    assert!(edges("#[cfg(test)] mod tests { use crate::provider::P; }").is_empty());
    assert!(edges("#[cfg(test)] use crate::provider::P;").is_empty());
    // A doc link names no module.
    assert!(edges("/// See [`crate::provider::P`].\npub struct S;").is_empty());
}

#[test]
fn an_import_against_the_list_fails_naming_file_line_and_edge() {
    let layers: &[(&str, &[&str])] = &[("provider", &[]), ("transaction", &[])];
    for transaction in [
        "\nuse crate::provider::P;",
        "\nuse crate::{transaction::ports, provider::P};",
        "\nuse crate as c;\nfn f(_: c::provider::P) {}",
    ] {
        let sources = crate_with(transaction);
        let sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
        let wrong = violations(&Crate::from_sources(&sources), layers, &[]);
        assert!(
            wrong.iter().any(|w| w.starts_with("transaction.rs:")
                && w.contains("transaction imports provider: not in transaction's allow list")),
            "{transaction}: {wrong:?}"
        );
    }
    // The same import, allowed, passes; through the ports only, the ports' entry allows it.
    let layers: &[(&str, &[&str])] = &[("provider", &["transaction::ports"]), ("transaction", &[])];
    let sources = crate_with("");
    let mut sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    sources.retain(|(m, _)| *m != "provider");
    sources.push(("provider", "use crate::transaction::ports::Port;"));
    assert!(violations(&Crate::from_sources(&sources), layers, &[]).is_empty());
    sources.pop();
    sources.push(("provider", "use crate::transaction::Run;"));
    assert_eq!(violations(&Crate::from_sources(&sources), layers, &[]).len(), 1);
}

#[test]
fn folders_importing_each_other_fail_even_when_allowed() {
    let layers: &[(&str, &[&str])] = &[("provider", &["transaction"]), ("transaction", &["provider"])];
    let sources = crate_with("use crate::provider::P;");
    let mut sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    sources.retain(|(m, _)| *m != "provider::deep");
    sources.push(("provider::deep", "use super::super::transaction::ports::Port;"));
    let wrong = violations(&Crate::from_sources(&sources), layers, &[]);
    assert_eq!(
        wrong,
        ["folders import each other: provider → transaction → provider"]
    );
    // A cycle a change under way breaks is named, and must be there.
    assert!(violations(
        &Crate::from_sources(&sources),
        layers,
        &[("provider", "transaction")]
    )
    .is_empty());
    let sources = crate_with("");
    let sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    assert_eq!(
        violations(
            &Crate::from_sources(&sources),
            layers,
            &[("provider", "transaction")]
        ),
        ["the cycle provider ↔ transaction is gone: remove it from PENDING_CYCLES"]
    );
}

#[test]
fn a_folder_missing_from_the_list_fails() {
    let sources = crate_with("");
    let sources: Vec<(&str, &str)> = sources.iter().map(|(m, s)| (*m, s.as_str())).collect();
    let wrong = violations(&Crate::from_sources(&sources), &[("transaction", &[])], &[]);
    assert_eq!(
        wrong,
        ["folder `provider` has no allow list: add what it may import"]
    );
}
