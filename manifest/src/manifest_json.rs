//! The manifest as JSON, in the one form in which a `manifest.toml` and the copy of it Flox
//! keeps in `manifest.lock` can be compared.
//!
//! Flox writes the lock's copy from its typed manifest, which leaves out absent keys and
//! empty tables (but writes `"options": {}` always, and `"hook": {}` for an empty `[hook]`),
//! and formats it its own way. Normalising both sides by dropping `null`s and empty objects
//! makes the comparison semantic: key order, TOML spelling (inline tables, dotted keys, string
//! quoting) and empty tables do not matter, every value does. Empty arrays are kept because
//! `systems = []` does not mean the same as no `systems`.

use serde_json::{Map, Value};
use toml::Table;

/// `document` as normalised JSON.
pub(crate) fn manifest_json(document: &Table) -> Value {
    // A toml table always serialises to JSON: its keys are strings and its values JSON-able.
    let json = serde_json::to_value(document).unwrap_or(Value::Null);
    normalise(json)
}

/// Drops `null`s and empty objects from objects, recursively, and the defaults Flox writes
/// into a lock's manifest that mean the same as nothing: `options.allow.licenses = []` (its
/// `Allows.licenses` was `#[serde(default)]` before it became optional, flox repo
/// cli/flox-manifest/src/parsed/common.rs).
pub(crate) fn normalise(mut value: Value) -> Value {
    if let Some(allow) = value
        .pointer_mut("/options/allow")
        .and_then(Value::as_object_mut)
    {
        if allow
            .get("licenses")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            allow.remove("licenses");
        }
    }
    normalise_nested(value)
}

fn normalise_nested(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, normalise_nested(value)))
                .filter(|(_, value)| !is_nothing(value))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalise_nested).collect()),
        other => other,
    }
}

fn is_nothing(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

/// Where two normalised manifests first differ, in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Dotted key, with `[i]` for array items; empty for the whole document.
    pub key: String,
    /// `None` when the key is absent on that side.
    pub left: Option<Value>,
    pub right: Option<Value>,
}

pub(crate) fn first_difference(left: &Value, right: &Value) -> Option<Difference> {
    difference_at(String::new(), left, right)
}

fn difference_at(key: String, left: &Value, right: &Value) -> Option<Difference> {
    match (left, right) {
        (Value::Object(left_map), Value::Object(right_map)) => {
            let mut keys: Vec<&String> = left_map.keys().chain(right_map.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|name| {
                let child = join(&key, name);
                match (left_map.get(name), right_map.get(name)) {
                    (Some(l), Some(r)) => difference_at(child, l, r),
                    (l, r) => Some(Difference {
                        key: child,
                        left: l.cloned(),
                        right: r.cloned(),
                    }),
                }
            })
        }
        (Value::Array(left_items), Value::Array(right_items))
            if left_items.len() == right_items.len() =>
        {
            left_items
                .iter()
                .zip(right_items)
                .enumerate()
                .find_map(|(i, (l, r))| difference_at(format!("{key}[{i}]"), l, r))
        }
        (l, r) if l == r => None,
        (l, r) => Some(Difference {
            key,
            left: Some(l.clone()),
            right: Some(r.clone()),
        }),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A value for an error message: compact JSON, cut short when long, or "absent".
pub(crate) fn describe(value: &Option<Value>) -> String {
    const MAX: usize = 60;
    match value {
        None => "absent".to_string(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > MAX {
                let cut: String = text.chars().take(MAX).collect();
                format!("{cut}…")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn toml_json(text: &str) -> Value {
        manifest_json(&text.parse::<Table>().unwrap())
    }

    #[test]
    fn formatting_and_empty_tables_do_not_matter() {
        let dotted = toml_json(
            "version = 1\n[install]\nhello.pkg-path = \"hello\"\nhello.priority = 3\n[hook]\n\
             [options]\n",
        );
        let inline = toml_json(
            "version = 1\n[install]\nhello = { priority = 3, pkg-path = 'hello' }\n\n[vars]",
        );
        assert_eq!(dotted, inline);
        let flox_copy = normalise(json!({
            "version": 1,
            "install": { "hello": { "pkg-path": "hello", "priority": 3 } },
            "options": {},
            "hook": {},
            "profile": null
        }));
        assert_eq!(first_difference(&dotted, &flox_copy), None);
    }

    #[test]
    fn floxs_default_licenses_are_nothing() {
        assert_eq!(
            normalise(json!({ "version": 1, "options": { "allow": { "licenses": [] } } })),
            json!({ "version": 1 })
        );
        assert_eq!(
            normalise(json!({ "options": { "allow": { "licenses": ["MIT"] } } })),
            json!({ "options": { "allow": { "licenses": ["MIT"] } } })
        );
    }

    #[test]
    fn empty_arrays_are_kept() {
        assert_eq!(
            toml_json("[options]\nsystems = []"),
            json!({ "options": { "systems": [] } })
        );
    }

    #[test]
    fn the_first_difference_is_named_by_its_key() {
        let manifest = toml_json(
            "version = 1\n[install]\nhello.pkg-path = \"hello\"\nhello.version = \"2.12\"\n\
             [containerize.config]\ncmd = [\"a\", \"b\"]",
        );
        let lock = json!({
            "version": 1,
            "install": { "hello": { "pkg-path": "hello", "version": "2.10" } },
            "containerize": { "config": { "cmd": ["a", "c"] } }
        });
        assert_eq!(
            first_difference(&manifest, &lock),
            Some(Difference {
                key: "containerize.config.cmd[1]".into(),
                left: Some(json!("b")),
                right: Some(json!("c")),
            })
        );
        let lock = json!({ "version": 1, "install": { "hello": { "pkg-path": "hello" } } });
        let difference = first_difference(&manifest, &lock).unwrap();
        assert_eq!(difference.key, "containerize");
        assert_eq!(difference.right, None);
        assert_eq!(describe(&difference.right), "absent");
        assert_eq!(
            describe(&difference.left),
            "{\"config\":{\"cmd\":[\"a\",\"b\"]}}"
        );
    }

    #[test]
    fn long_values_are_cut_short() {
        let long = Some(json!("x".repeat(100)));
        let described = describe(&long);
        assert_eq!(described.chars().count(), 61);
        assert!(described.ends_with('…'));
    }

    #[test]
    fn arrays_of_different_length_differ_as_a_whole() {
        let difference =
            first_difference(&json!({ "a": [1, 2] }), &json!({ "a": [1, 2, 3] })).unwrap();
        assert_eq!(difference.key, "a");
    }
}
