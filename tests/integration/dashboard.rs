//! The Grafana dashboard shipped with the agent (`packaging/grafana/freezeframe.json`), read
//! into typed panels and queries: every query names only metric families a real run of the
//! agent writes, and every family the agent writes is shown by some panel (or listed below as
//! deliberately not shown).

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Families the dashboard leaves out on purpose, with why. None today.
const NOT_SHOWN: &[(&str, &str)] = &[];

/// The dashboard's JSON model, as far as the test reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dashboard {
    schema_version: u32,
    title: String,
    uid: String,
    templating: Templating,
    panels: Vec<Panel>,
}

#[derive(Debug, Deserialize)]
struct Templating {
    list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    datasource: Option<DataSourceRef>,
    query: VariableQuery,
}

/// A variable's query: the plugin's id for a datasource variable, PromQL for a query one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VariableQuery {
    Plugin(String),
    Query { query: String },
}

#[derive(Debug, Deserialize, PartialEq)]
struct DataSourceRef {
    #[serde(rename = "type")]
    kind: String,
    uid: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Panel {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    datasource: DataSourceRef,
    grid_pos: GridPos,
    targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
struct GridPos {
    w: u32,
    h: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    ref_id: String,
    datasource: DataSourceRef,
    expr: String,
}

fn dashboard() -> Dashboard {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/freezeframe.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// PromQL's words that are neither functions (followed by `(`) nor metrics.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN",
];

/// The words whose parenthesised list holds label names.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names `expr` selects: the identifiers outside label matchers (`{…}`), ranges
/// (`[…]`), strings and label lists (`by (…)`) that are not followed by `(` (functions) or by
/// `by`/`without` (aggregations).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_brace, mut depth_bracket) = (0, 0usize, 0usize);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            c if (c.is_ascii_alphabetic() || c == '_' || c == ':') && (i == 0 || !is_word(chars[i - 1])) => {
                let start = i;
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let rest: String = chars[i..].iter().collect();
                let rest = rest.trim_start();
                if GROUPING.contains(&word.as_str()) {
                    // Past the label list, if one follows.
                    if rest.starts_with('(') {
                        i += chars[i..]
                            .iter()
                            .position(|c| *c == ')')
                            .map_or(chars.len() - i, |p| p + 1);
                    }
                    continue;
                }
                let aggregated = ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                });
                let called = rest.starts_with('(') || aggregated;
                let variable = start > 0 && chars[start - 1] == '$';
                if depth_brace == 0
                    && depth_bracket == 0
                    && !called
                    && !variable
                    && !KEYWORDS.contains(&word.as_str())
                {
                    names.insert(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric families a real run writes for node_exporter: a snapshot with retention and a
/// recorded drill, so that every family the agent has appears, read back from its textfile's
/// `# TYPE` lines.
fn exported_families() -> BTreeSet<String> {
    let fs = freezeframe_tests::scratch_fs(freezeframe_tests::Fs::Ext4);
    let textfiles = fs.dir.path().join("textfiles");
    std::fs::create_dir(&textfiles).unwrap();
    let drill = fs.dir.path().join("drill.json");
    freezeframe_agent::LastDrill {
        unix_seconds: 1_765_000_000,
        snapshot: "drilled".into(),
        verified: true,
    }
    .store(&drill)
    .unwrap();
    let config = freezeframe_tests::local_image_config(&fs, "");
    let dropins = config.with_file_name("config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("metrics.toml"),
        format!(
            "[metrics]\ntextfile_dir = {:?}\n[verify]\nstate_file = {:?}\n[retention]\nkeep_last = 3\n",
            textfiles.display().to_string(),
            drill.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(freezeframe_tests::agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["snapshot", "--wait", "--name", "dashboard-1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(textfiles.join("freezeframe.prom")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn the_dashboard_queries_only_what_the_agent_exports_and_shows_all_of_it() {
    let dashboard = dashboard();
    assert!(dashboard.schema_version >= 36, "{}", dashboard.schema_version);
    assert_eq!(
        (dashboard.title.as_str(), dashboard.uid.as_str()),
        ("freezeframe", "freezeframe")
    );
    let source = dashboard
        .templating
        .list
        .iter()
        .find(|v| v.kind == "datasource")
        .expect("a datasource variable");
    assert!(matches!(&source.query, VariableQuery::Plugin(p) if p == "prometheus"));
    let ours = DataSourceRef {
        kind: "prometheus".into(),
        uid: format!("${{{}}}", source.name),
    };
    let mut queries: Vec<(String, &str)> = Vec::new();
    for variable in dashboard.templating.list.iter().filter(|v| v.kind == "query") {
        assert_eq!(
            variable.datasource.as_ref(),
            Some(&ours),
            "variable {}",
            variable.name
        );
        match &variable.query {
            VariableQuery::Query { query } => {
                // label_values(METRIC, LABEL): the metric is the first argument.
                let inner = query.trim_start_matches("label_values(");
                queries.push((
                    format!("variable {}", variable.name),
                    inner.split(',').next().unwrap(),
                ));
            }
            VariableQuery::Plugin(p) => panic!("variable {}: {p}", variable.name),
        }
    }
    let mut ids = BTreeSet::new();
    for panel in &dashboard.panels {
        assert!(ids.insert(panel.id), "panel id {} twice", panel.id);
        assert_eq!(panel.datasource, ours, "panel {}", panel.title);
        assert!(
            panel.grid_pos.w > 0 && panel.grid_pos.h > 0,
            "panel {}",
            panel.title
        );
        assert!(!panel.targets.is_empty(), "panel {} has no query", panel.title);
        assert!(!panel.kind.is_empty());
        for target in &panel.targets {
            assert_eq!(target.datasource, ours, "panel {} {}", panel.title, target.ref_id);
            queries.push((format!("panel {} {}", panel.title, target.ref_id), &target.expr));
        }
    }

    let exported = exported_families();
    assert!(exported.contains("freezeframe_runs_total"), "{exported:?}");
    let mut used = BTreeSet::new();
    for (place, query) in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{place}: no metric in {query}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{place}: {name} is not a metric the agent exports ({exported:?})"
            );
            used.insert(name);
        }
    }
    for family in &exported {
        assert!(
            used.contains(family) || NOT_SHOWN.iter().any(|(name, _)| name == family),
            "no panel shows {family}: add one, or list it in NOT_SHOWN with why"
        );
    }
}

#[test]
fn metric_names_are_read_from_promql_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"time() - max by (droplet) (a_total{droplet=~"$droplet", x="b_c"}) or on (droplet) b[5m] offset 1h"#
        ),
        ["a_total", "b"]
    );
    assert_eq!(
        names("sum without (reason) (increase(c:rule[$__rate_interval])) > bool 3 and d"),
        ["c:rule", "d"]
    );
}
