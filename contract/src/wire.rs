//! Results on the bus as D-Bus types, not JSON text: a report, a plan or a status is sent as
//! `a{sv}` whose keys are the JSON document's (docs/src/dbus.md), so `busctl` and any
//! D-Bus client read them without parsing JSON, and the CLI turns them back into the same JSON.
//! Objects become `a{sv}`, arrays `av`, strings `s`, booleans `b`, integers `t` (or `x` when
//! negative), floating-point numbers `d` (a report's milliseconds, even when whole); a null is
//! left out (its key is absent). The CLI reads them back into the types they came from.

use serde_json::Value as Json;
use std::collections::HashMap;
use zbus::{OwnedVariant, Variant};

/// A dictionary of D-Bus values, `a{sv}`.
pub type Dict = HashMap<String, OwnedVariant>;

fn owned(value: Variant<'static>) -> OwnedVariant {
    OwnedVariant::try_from(value).expect("no file descriptors in a JSON document")
}

/// `value` as a D-Bus value; `None` for null.
pub fn to_value(value: &Json) -> Option<OwnedVariant> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => owned(Variant::from(*b)),
        Json::String(s) => owned(Variant::from(s.clone())),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => owned(Variant::from(u)),
            (None, Some(i)) => owned(Variant::from(i)),
            _ => owned(Variant::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::Array(items) => {
            let items: Vec<Variant<'static>> = items
                .iter()
                .filter_map(to_value)
                .map(|v| Variant::Variant(Box::new(Variant::from(v))))
                .collect();
            owned(Variant::from(items))
        }
        Json::Object(_) => owned(Variant::from(to_dict(value))),
    })
}

/// A value that serializes as a JSON object (a report, a plan) as `a{sv}`; anything else as
/// an empty one.
pub fn to_dict(value: &impl serde::Serialize) -> Dict {
    match serde_json::to_value(value).unwrap_or_default() {
        Json::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| Some((k, to_value(&v)?)))
            .collect(),
        _ => Dict::new(),
    }
}

/// A D-Bus value back as JSON (any D-Bus value, not only those [`to_value`] makes).
pub fn to_json(value: &Variant<'_>) -> Json {
    match value {
        Variant::Bool(b) => Json::from(*b),
        Variant::U8(n) => Json::from(*n),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => Json::from(*n),
        Variant::Str(s) => Json::from(s.as_str()),
        Variant::Signature(s) => Json::from(s.to_string()),
        Variant::ObjectPath(p) => Json::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Variant::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Variant::Str(s) => s.to_string(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Variant::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}

/// An `a{sv}` read back into the type it was made from (a report, a plan, a status).
pub fn from_dict<T: serde::de::DeserializeOwned>(dict: &Dict) -> Result<T, serde_json::Error> {
    serde_json::from_value(dict_to_json(dict))
}

/// An `a{sv}` back as a JSON object.
pub fn dict_to_json(dict: &Dict) -> Json {
    Json::Object(dict.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_goes_over_the_bus_typed_and_comes_back_the_same() {
        let report = serde_json::json!({
            "status": "succeeded",
            "frozen_ms": 12.5,
            "total_ms": 300,
            "offset": -3,
            "consistency": null,
            "warnings": [],
            "pruned": [{"id": "7", "name": "a"}, {"id": "8", "name": "b"}],
            "filesystems": {"frozen": ["/", "/data"], "skipped": []},
            "setup_error": false,
        });
        let dict = to_dict(&report);
        assert_eq!(dict["status"].value_signature().to_string(), "s");
        assert_eq!(dict["frozen_ms"].value_signature().to_string(), "d");
        assert_eq!(dict["total_ms"].value_signature().to_string(), "t");
        assert_eq!(dict["offset"].value_signature().to_string(), "x");
        assert_eq!(dict["pruned"].value_signature().to_string(), "av");
        assert_eq!(dict["filesystems"].value_signature().to_string(), "a{sv}");
        assert!(!dict.contains_key("consistency"), "a null is left out");
        let mut expected = report.clone();
        expected.as_object_mut().unwrap().remove("consistency");
        assert_eq!(dict_to_json(&dict), expected);
    }

    #[test]
    fn a_typed_report_comes_back_equal() {
        use crate::report::{Phase, PhaseTiming, Report};
        use crate::{Consistency, DevNum, SkipReason, Skipped, Target};
        let mut report = Report::new("web-1-application".into(), "digitalocean".into());
        report.consistency = Some(Consistency::Application);
        report.action_id = Some("42".into());
        report.frozen_ms = 3.0;
        report.phases.push(PhaseTiming {
            phase: Phase::Freeze,
            ms: 1.25,
        });
        report.filesystems.frozen.push(Target {
            mountpoint: "/".into(),
            mount_id: 29,
            dev: DevNum { major: 252, minor: 1 },
            fstype: "ext4".into(),
            source: "/dev/vda1".into(),
            also_mounted_at: Vec::new(),
        });
        report.filesystems.skipped.push(Skipped {
            mountpoint: "/srv".into(),
            fstype: "ext4".into(),
            reason: SkipReason::SameFilesystemAs("/".into()),
        });
        let dict = to_dict(&report);
        assert_eq!(
            dict["frozen_ms"].value_signature().to_string(),
            "d",
            "a float stays one"
        );
        assert_eq!(from_dict::<Report>(&dict).unwrap(), report);
        let not_started = Report::not_started("busy".into());
        assert_eq!(from_dict::<Report>(&to_dict(&not_started)).unwrap(), not_started);
    }
}
