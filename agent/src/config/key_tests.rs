//! Every key of the schema, taken from the packaged `packaging/config/config.toml`: set in a
//! drop-in, it is seen in the merged configuration.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

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

/// Every key of the schema with the code's default, as JSON (`null`: none): `section.key`, and
/// `quiescer.KIND.key` for each kind of `[[quiescer]]`.
fn schema_defaults() -> BTreeMap<String, serde_json::Value> {
    let mut keys = BTreeMap::new();
    let defaults = serde_json::to_value(ConfigFile::default()).unwrap();
    for (section, table) in defaults.as_object().unwrap() {
        if section == "quiescer" {
            continue; // none by default: each kind below
        }
        for (key, value) in table.as_object().unwrap() {
            keys.insert(format!("{section}.{key}"), value.clone());
        }
    }
    for kind in schema::QuiescerSection::every_kind() {
        let mut table = serde_json::to_value(kind).unwrap().as_object().unwrap().clone();
        let name = table.remove("kind").unwrap();
        for (key, value) in table {
            keys.insert(format!("quiescer.{}.{key}", name.as_str().unwrap()), value);
        }
    }
    keys
}

impl Documented {
    fn name(&self) -> String {
        match &self.kind {
            Some(kind) => format!("{}.{kind}.{}", self.section, self.key),
            None => format!("{}.{}", self.section, self.key),
        }
    }

    /// The documented value as the schema reads it (a duration as the code writes it).
    fn read(&self) -> serde_json::Value {
        let (text, path) = match &self.kind {
            Some(kind) => (
                format!("[[quiescer]]\nkind = {kind:?}\n{} = {}\n", self.key, self.value),
                format!("/quiescer/0/{}", self.key),
            ),
            None => (
                format!("[{}]\n{} = {}\n", self.section, self.key, self.value),
                format!("/{}/{}", self.section, self.key),
            ),
        };
        let read = serde_json::to_value(merged(&[&text])).unwrap();
        read.pointer(&path).unwrap().clone()
    }
}

#[test]
fn the_packaged_file_documents_every_key_with_the_code_s_default() {
    let schema = schema_defaults();
    let documented = documented();
    let names: BTreeSet<String> = documented.iter().map(Documented::name).collect();
    let missing: Vec<&String> = schema.keys().filter(|k| !names.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "packaging/config/config.toml does not document {missing:?}"
    );
    for doc in &documented {
        let name = doc.name();
        let default = schema
            .get(&name)
            .unwrap_or_else(|| panic!("{name} is documented but is no key of the schema"));
        let read = doc.read();
        match (default.is_null(), doc.kind.is_some()) {
            // A key without a default is shown as an example (`# key = value`).
            (true, _) => assert!(
                !doc.default,
                "{name} has no default: write it `# {} = …`",
                doc.key
            ),
            // In [[quiescer]] examples, the keys that have a default show it.
            (false, true) => assert_eq!(&read, default, "{name}: the example is not the default"),
            (false, false) => {
                assert!(doc.default, "{name}: write its default as `#{} = …`", doc.key);
                assert_eq!(&read, default, "{name}: the documented default is not the code's");
            }
        }
    }
    // The Redis address is applied when validating (`socket` and `address` exclude each other).
    let redis = documented
        .iter()
        .find(|d| d.name() == "quiescer.redis.address")
        .expect("the Redis address is documented");
    assert_eq!(redis.value.as_str(), Some(defaults::DEFAULT_REDIS_ADDRESS));
    // Uncommented, the defaults are the code's; as shipped, it sets nothing.
    assert_eq!(merged(&[&uncommented()]), ConfigFile::default());
    assert_eq!(merged(&[PACKAGED]), ConfigFile::default());
    assert_eq!(
        toml::from_str::<toml::Table>(PACKAGED).unwrap(),
        toml::Table::new(),
        "the packaged file sets no key"
    );
}
