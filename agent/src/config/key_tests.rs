//! Every key of the schema, taken from the packaged `packaging/config/config.toml`: set in a
//! drop-in, it is seen in the merged configuration.

use super::*;

/// The packaged file, which documents every key (`#key = default`, or `# key = example` for
/// keys without one and in the `[[quiescer]]` examples).
const PACKAGED: &str = include_str!("../../../packaging/config/config.toml");

/// One key the packaged file documents.
#[derive(Debug)]
struct Documented {
    /// `agent`, `freeze`, …, or `quiescer` for a `[[quiescer]]` example.
    section: String,
    /// The example's `kind`, for a `[[quiescer]]` key.
    kind: Option<String>,
    key: String,
    value: toml::Value,
    /// Written `#key = value`: the default. `# key = value` is an example.
    #[allow(dead_code)] // read by the next test
    default: bool,
}

/// Every key-shaped comment line of the packaged file (prose lines are not key-shaped).
fn documented() -> Vec<Documented> {
    let mut section: Option<String> = None;
    let mut kind = None;
    let mut keys = Vec::new();
    for line in PACKAGED.lines() {
        let (body, default) = match line.strip_prefix("# ") {
            Some(body) => (body, false),
            None => match line.strip_prefix('#') {
                Some(body) => (body, true),
                None => continue,
            },
        };
        if let Some(name) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            section = Some(name.trim_matches(['[', ']']).to_string());
            kind = None;
            continue;
        }
        let Some((key, value)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let section = section
            .clone()
            .unwrap_or_else(|| panic!("`{key}` documented before any section"));
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .unwrap_or_else(|e| panic!("{section}.{key}: the documented value is not TOML: {e}"))
            .remove("v")
            .unwrap();
        if section == "quiescer" && key == "kind" {
            kind = Some(value.as_str().expect("kind is a word").to_string());
            continue;
        }
        keys.push(Documented {
            kind: kind.clone().filter(|_| section == "quiescer"),
            section,
            key: key.to_string(),
            value,
            default,
        });
    }
    keys
}

/// The packaged file with every default uncommented: every key with a default set explicitly.
fn uncommented() -> String {
    PACKAGED
        .lines()
        .map(|l| {
            l.strip_prefix('#')
                .filter(|r| !r.starts_with(' ') && !r.starts_with('#'))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Another value of the same type, which the schema accepts as well.
fn vary(value: &toml::Value) -> toml::Value {
    use toml::Value;
    match value {
        Value::Boolean(b) => Value::Boolean(!b),
        Value::Integer(n) => Value::Integer(n + 1),
        Value::String(s) => Value::String(match humantime::parse_duration(s) {
            Ok(d) => humantime::format_duration(d + Duration::from_secs(1)).to_string(),
            Err(_) => format!("{s}x"),
        }),
        Value::Array(list) => {
            let mut list = list.clone();
            list.push(Value::String("/varied".into()));
            Value::Array(list)
        }
        other => panic!("no other value for {other}"),
    }
}

/// `files`, read in order as a main file and its drop-ins, merged (not validated: the varied
/// values need only be of the right type).
fn merged(files: &[&str]) -> ConfigFile {
    let names: Vec<PathBuf> = (0..files.len()).map(|n| format!("{n}.toml").into()).collect();
    let files: Vec<(&Path, &str)> = names
        .iter()
        .map(PathBuf::as_path)
        .zip(files.iter().copied())
        .collect();
    parse(&files).unwrap_or_else(|e| panic!("{e}\nin:\n{files:?}"))
}

#[test]
fn every_key_set_in_a_drop_in_is_seen() {
    let keys = documented();
    assert!(keys.len() > 50, "the packaged file's keys are found: {keys:?}");
    for doc in keys {
        let value = vary(&doc.value);
        let mut main: toml::Table = uncommented().parse().unwrap();
        let dropin = match &doc.kind {
            None => format!("[{}]\n{} = {value}\n", doc.section, doc.key),
            Some(kind) => {
                // A drop-in's [[quiescer]] list replaces the main file's.
                let mut quiescer = toml::Table::new();
                quiescer.insert("kind".into(), kind.clone().into());
                main.insert("quiescer".into(), vec![toml::Value::from(quiescer)].into());
                format!("[[quiescer]]\nkind = {kind:?}\n{} = {value}\n", doc.key)
            }
        };
        // The same key written into the main file itself.
        let mut expected = main.clone();
        let dropin_table: toml::Table = dropin.parse().unwrap();
        for (section, table) in dropin_table {
            match (expected.get_mut(&section), table) {
                (Some(toml::Value::Table(into)), toml::Value::Table(from)) => into.extend(from),
                (_, other) => {
                    expected.insert(section, other);
                }
            }
        }
        let (main, expected) = (main.to_string(), expected.to_string());
        let seen = merged(&[&main, &dropin]);
        assert_eq!(seen, merged(&[&expected]), "{doc:?}: {dropin}");
        assert_ne!(seen, merged(&[&main]), "{doc:?}: {dropin} changes nothing");
    }
}

