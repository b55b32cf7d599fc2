//! One entry of a lock's `packages`: a package locked for one system.
//!
//! Flox writes three kinds of entry and does not tag them; they are told apart by their
//! fields, as Flox itself does: catalog entries are snake_case (`attr_path`, `locked_url`),
//! flake entries kebab-case (`locked-url`, `locked-flake-attr-path`), and store-path entries
//! have a `store_path`. Flox adds catalog metadata over time, so fields nixlet does not use
//! are allowed and not checked; the ones it relies on (`install_id`, `system`, the outputs
//! and which of them to install) are checked strictly.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::flake_installable::FlakeInstallable;
use crate::store_path::{StorePath, StorePathError};

/// The output name a store-path entry's one path is given.
pub const STORE_PATH_OUTPUT: &str = "out";

const CATALOG_MARKERS: [&str; 2] = ["attr_path", "locked_url"];
const FLAKE_MARKERS: [&str; 2] = ["locked-url", "locked-flake-attr-path"];
const STORE_PATH_MARKERS: [&str; 1] = ["store_path"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockEntryKind {
    Catalog,
    Flake,
    StorePath,
}

impl fmt::Display for LockEntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockEntryKind::Catalog => "catalog",
            LockEntryKind::Flake => "flake",
            LockEntryKind::StorePath => "store-path",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    pub install_id: String,
    /// e.g. `x86_64-linux`.
    pub system: String,
    pub kind: LockEntryKind,
    /// Output name → store path; a store-path entry has one output, [`STORE_PATH_OUTPUT`].
    pub outputs: BTreeMap<String, StorePath>,
    /// The outputs the package itself says to install (`meta.outputsToInstall`), in its order;
    /// `None` when the lock does not say.
    pub outputs_to_install: Option<Vec<String>>,
    /// The priority Flox locked (the descriptor's, else the package's `meta.priority` for a
    /// flake, else 5): what its environment builder uses. `None` when the entry has none.
    pub priority: Option<u32>,
    /// Flake entries only: the locked flake and attribute the outputs were evaluated from.
    pub flake: Option<FlakeInstallable>,
    /// Metadata for messages, when the entry has it.
    pub pname: Option<String>,
    pub version: Option<String>,
}

/// What is wrong with one entry; `lock.rs` adds where the entry is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("must be an object, not {0}")]
    NotAnObject(&'static str),
    #[error(
        "is neither a catalog entry (with \"attr_path\"), a flake entry (with \"locked-url\") \
         nor a store-path entry (with \"store_path\")"
    )]
    UnknownKind,
    #[error("has fields of both a {first} entry ({first_field:?}) and a {second} entry ({second_field:?})")]
    AmbiguousKind {
        first: LockEntryKind,
        first_field: &'static str,
        second: LockEntryKind,
        second_field: &'static str,
    },
    #[error("{kind} entry has no {key:?}")]
    Missing { kind: LockEntryKind, key: String },
    #[error("{kind} entry: {key:?} must be {expected}, not {found}")]
    WrongType {
        kind: LockEntryKind,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    // Embedded in the message, so not a `source` too (the chain would repeat it).
    #[error("{kind} entry: {key:?}: {problem}")]
    InvalidStorePath {
        kind: LockEntryKind,
        key: String,
        problem: StorePathError,
    },
    #[error("{kind} entry: \"outputs\" is empty")]
    NoOutputs { kind: LockEntryKind },
    #[error("{kind} entry: {key:?} names output {output:?}, which is not in \"outputs\"")]
    UnknownOutput {
        kind: LockEntryKind,
        key: String,
        output: String,
    },
}

impl LockEntry {
    /// The install id and system of `value`, when it has them as strings: enough to say which
    /// entry an error is about before the entry is known to be valid.
    pub(crate) fn identify(value: &Value) -> (Option<String>, Option<String>) {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        (text("install_id"), text("system"))
    }

    pub(crate) fn from_json(value: &Value) -> Result<LockEntry, EntryProblem> {
        let object = value
            .as_object()
            .ok_or_else(|| EntryProblem::NotAnObject(json_type(value)))?;
        let kind = kind_of(object)?;
        let reader = Reader { object, kind };

        let install_id = reader.required_string("install_id")?;
        let system = reader.required_string("system")?;
        let pname = reader.lenient_string("pname");
        let version = reader.lenient_string("version");
        let priority = reader.priority()?;

        if kind == LockEntryKind::StorePath {
            let store_path =
                reader.store_path("store_path", &reader.required_string("store_path")?)?;
            return Ok(LockEntry {
                install_id,
                system,
                kind,
                outputs: BTreeMap::from([(STORE_PATH_OUTPUT.to_string(), store_path)]),
                outputs_to_install: Some(vec![STORE_PATH_OUTPUT.to_string()]),
                priority,
                flake: None,
                pname,
                version,
            });
        }

        let outputs = reader.outputs()?;
        // Flox's builder takes `outputs_to_install`, else `outputs-to-install` (flake entries
        // are kebab-case), whatever the entry's kind (flox repo, buildenv/builder.pl: "XXX
        // flake locking bug"). `requested-outputs-to-install` is not used by the builder.
        let outputs_to_install = match reader.output_list("outputs_to_install", &outputs)? {
            Some(list) => Some(list),
            None => reader.output_list("outputs-to-install", &outputs)?,
        };
        let flake = if kind == LockEntryKind::Flake {
            // Not used, but a flake entry without its output order is not one Flox wrote.
            reader.optional_string_list("output-names")?;
            // Flox writes both; a node that builds flakes needs both to know what to build.
            Some(FlakeInstallable {
                locked_url: reader.required_string("locked-url")?,
                attr_path: reader.required_string("locked-flake-attr-path")?,
            })
        } else {
            None
        };
        Ok(LockEntry {
            install_id,
            system,
            kind,
            outputs,
            outputs_to_install,
            priority,
            flake,
            pname,
            version,
        })
    }
}

/// Decides the kind by the marker fields present; fields of two kinds at once are refused
/// rather than guessed at.
fn kind_of(object: &Map<String, Value>) -> Result<LockEntryKind, EntryProblem> {
    let found: Vec<(LockEntryKind, &'static str)> = [
        (LockEntryKind::Catalog, &CATALOG_MARKERS[..]),
        (LockEntryKind::Flake, &FLAKE_MARKERS[..]),
        (LockEntryKind::StorePath, &STORE_PATH_MARKERS[..]),
    ]
    .into_iter()
    .filter_map(|(kind, markers)| {
        markers
            .iter()
            .find(|marker| object.contains_key(**marker))
            .map(|marker| (kind, *marker))
    })
    .collect();
    match found.as_slice() {
        [(kind, _)] => Ok(*kind),
        [] => Err(EntryProblem::UnknownKind),
        [(first, first_field), (second, second_field), ..] => Err(EntryProblem::AmbiguousKind {
            first: *first,
            first_field,
            second: *second,
            second_field,
        }),
    }
}

struct Reader<'a> {
    object: &'a Map<String, Value>,
    kind: LockEntryKind,
}

impl Reader<'_> {
    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> EntryProblem {
        EntryProblem::WrongType {
            kind: self.kind,
            key: key.to_string(),
            expected,
            found: json_type(found),
        }
    }

    fn required_string(&self, key: &str) -> Result<String, EntryProblem> {
        match self.object.get(key) {
            None | Some(Value::Null) => Err(EntryProblem::Missing {
                kind: self.kind,
                key: key.to_string(),
            }),
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(other) => Err(self.wrong_type(key, "a non-empty string", other)),
        }
    }

    /// `priority`, when the entry has one (`null` counts as absent, as Flox reads it).
    fn priority(&self) -> Result<Option<u32>, EntryProblem> {
        match self.object.get("priority") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => match number.as_u64().map(u32::try_from) {
                Some(Ok(priority)) => Ok(Some(priority)),
                _ => Err(self.wrong_type(
                    "priority",
                    "an integer from 0 to 4294967295",
                    &Value::Number(number.clone()),
                )),
            },
            Some(other) => {
                Err(self.wrong_type("priority", "an integer from 0 to 4294967295", other))
            }
        }
    }

    /// Metadata nixlet only shows: anything but a string counts as absent.
    fn lenient_string(&self, key: &str) -> Option<String> {
        self.object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn store_path(&self, key: &str, text: &str) -> Result<StorePath, EntryProblem> {
        StorePath::parse(text).map_err(|problem| EntryProblem::InvalidStorePath {
            kind: self.kind,
            key: key.to_string(),
            problem,
        })
    }

    fn outputs(&self) -> Result<BTreeMap<String, StorePath>, EntryProblem> {
        let value = self.object.get("outputs").ok_or(EntryProblem::Missing {
            kind: self.kind,
            key: "outputs".to_string(),
        })?;
        let map = value
            .as_object()
            .ok_or_else(|| self.wrong_type("outputs", "an object", value))?;
        if map.is_empty() {
            return Err(EntryProblem::NoOutputs { kind: self.kind });
        }
        map.iter()
            .map(|(name, path)| {
                let key = format!("outputs.{name}");
                let text = path
                    .as_str()
                    .ok_or_else(|| self.wrong_type(&key, "a store path string", path))?;
                Ok((name.clone(), self.store_path(&key, text)?))
            })
            .collect()
    }

    fn optional_string_list(&self, key: &str) -> Result<Option<Vec<String>>, EntryProblem> {
        let expected = "an array of strings";
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(self.wrong_type(key, expected, other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong_type(key, expected, other)),
        }
    }

    /// A list of output names, each of which must be one of `outputs`.
    fn output_list(
        &self,
        key: &str,
        outputs: &BTreeMap<String, StorePath>,
    ) -> Result<Option<Vec<String>>, EntryProblem> {
        let list = self.optional_string_list(key)?;
        if let Some(names) = &list {
            if let Some(unknown) = names.iter().find(|name| !outputs.contains_key(*name)) {
                return Err(EntryProblem::UnknownOutput {
                    kind: self.kind,
                    key: key.to_string(),
                    output: unknown.clone(),
                });
            }
        }
        Ok(list)
    }
}

/// JSON's names for its types, for messages.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CURL_BIN: &str = "/nix/store/1vabdxmxl9pdbzl4kvxflvzs4qhyapq6-curl-8.6.0-bin";
    const CURL_MAN: &str = "/nix/store/5dk2f7a1pqmbq0g5zd2yqr6g0gqk7wws-curl-8.6.0-man";
    const CURL_OUT: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-curl-8.6.0";

    fn catalog() -> Value {
        json!({
            "attr_path": "curl",
            "broken": false,
            "derivation": "/nix/store/1zbkwsxr0q1b3fr6nkyaz8fdgy2flyd2-curl-8.6.0.drv",
            "description": "Command line tool for transferring files with URL syntax",
            "install_id": "curl",
            "license": "curl",
            "locked_url": "https://github.com/flox/nixpkgs?rev=52faf482a3889b7619003c0daec593a1912fddc1",
            "name": "curl-8.6.0",
            "pname": "curl",
            "rev": "52faf482a3889b7619003c0daec593a1912fddc1",
            "rev_count": 776537,
            "rev_date": "2025-03-30T06:12:12Z",
            "scrape_date": "2025-04-01T02:06:56.460270Z",
            "stabilities": ["unstable"],
            "unfree": false,
            "version": "8.6.0",
            "outputs_to_install": ["bin", "man"],
            "outputs": { "bin": CURL_BIN, "man": CURL_MAN, "out": CURL_OUT },
            "system": "x86_64-linux",
            "group": "toplevel",
            "priority": 5,
            "some_future_field": { "anything": [1, 2] }
        })
    }

    fn problem(value: Value) -> String {
        LockEntry::from_json(&value).unwrap_err().to_string()
    }

    fn without(mut value: Value, key: &str) -> Value {
        value.as_object_mut().unwrap().remove(key);
        value
    }

    fn with(mut value: Value, key: &str, field: Value) -> Value {
        value
            .as_object_mut()
            .unwrap()
            .insert(key.to_string(), field);
        value
    }

    #[test]
    fn reads_a_catalog_entry_and_tolerates_extra_metadata() {
        let entry = LockEntry::from_json(&catalog()).unwrap();
        assert_eq!(entry.install_id, "curl");
        assert_eq!(entry.system, "x86_64-linux");
        assert_eq!(entry.kind, LockEntryKind::Catalog);
        assert_eq!(entry.outputs.len(), 3);
        assert_eq!(entry.outputs["man"].to_string(), CURL_MAN);
        assert_eq!(
            entry.outputs_to_install,
            Some(vec!["bin".to_string(), "man".to_string()])
        );
        assert_eq!(entry.priority, Some(5));
        assert_eq!(entry.pname.as_deref(), Some("curl"));
        assert_eq!(entry.version.as_deref(), Some("8.6.0"));
        // Absent or null outputs_to_install is allowed: `outputs.rs` then uses Nix's default.
        let entry = LockEntry::from_json(&with(catalog(), "outputs_to_install", Value::Null));
        assert_eq!(entry.unwrap().outputs_to_install, None);
    }

    #[test]
    fn reads_a_flake_entry() {
        let value = json!({
            "install_id": "jq",
            "locked-url": "github:jqlang/jq/b33a7d5a5ab5a0b5f57d6f8f8a3a3d3a7a1b2c3d",
            "locked-flake-attr-path": "packages.aarch64-linux.default",
            "derivation": "/nix/store/1zbkwsxr0q1b3fr6nkyaz8fdgy2flyd2-jq-1.7.1.drv",
            "outputs": { "bin": CURL_BIN, "out": CURL_OUT },
            "output-names": ["bin", "out"],
            "outputs-to-install": ["bin"],
            "requested-outputs-to-install": ["out"],
            "package-system": "aarch64-linux",
            "system": "aarch64-linux",
            "name": "jq-1.7.1",
            "pname": "jq",
            "version": "1.7.1",
            "licenses": ["MIT"],
            "priority": 5
        });
        let entry = LockEntry::from_json(&value).unwrap();
        assert_eq!(entry.kind, LockEntryKind::Flake);
        assert_eq!(entry.outputs_to_install, Some(vec!["bin".to_string()]));
        assert_eq!(entry.priority, Some(5));
        let flake = entry.flake.unwrap();
        assert_eq!(
            flake.to_string(),
            "github:jqlang/jq/b33a7d5a5ab5a0b5f57d6f8f8a3a3d3a7a1b2c3d#packages.aarch64-linux.default"
        );
        assert_eq!(
            problem(without(value.clone(), "locked-flake-attr-path")),
            "flake entry has no \"locked-flake-attr-path\""
        );
        assert_eq!(
            problem(with(value.clone(), "output-names", json!("bin"))),
            "flake entry: \"output-names\" must be an array of strings, not a string"
        );
        assert_eq!(
            problem(with(value.clone(), "outputs-to-install", json!(["lib"]))),
            "flake entry: \"outputs-to-install\" names output \"lib\", which is not in \
             \"outputs\""
        );
        // A missing priority is Flox's default, read later; a wrong one is refused.
        let entry = LockEntry::from_json(&with(value.clone(), "priority", Value::Null)).unwrap();
        assert_eq!(entry.priority, None);
        assert_eq!(
            problem(with(value, "priority", json!(-1))),
            "flake entry: \"priority\" must be an integer from 0 to 4294967295, not a number"
        );
    }

    #[test]
    fn reads_a_store_path_entry() {
        let entry = LockEntry::from_json(&json!({
            "install_id": "curl",
            "store_path": CURL_BIN,
            "system": "x86_64-linux",
            "priority": 5
        }))
        .unwrap();
        assert_eq!(entry.kind, LockEntryKind::StorePath);
        assert_eq!(entry.outputs["out"].to_string(), CURL_BIN);
        assert_eq!(entry.outputs_to_install, Some(vec!["out".to_string()]));
        assert_eq!(
            problem(json!({ "install_id": "c", "store_path": "/tmp/c", "system": "x" })),
            "store-path entry: \"store_path\": invalid store path \"/tmp/c\": it does not start \
             with \"/nix/store/\""
        );
    }

    #[test]
    fn identifies_entries_for_messages() {
        assert_eq!(
            LockEntry::identify(&catalog()),
            (Some("curl".into()), Some("x86_64-linux".into()))
        );
        assert_eq!(LockEntry::identify(&json!([1])), (None, None));
    }

    #[test]
    fn kinds_are_told_apart_or_refused() {
        assert_eq!(problem(json!("curl")), "must be an object, not a string");
        assert_eq!(
            problem(json!({ "install_id": "curl", "system": "x86_64-linux" })),
            "is neither a catalog entry (with \"attr_path\"), a flake entry (with \
             \"locked-url\") nor a store-path entry (with \"store_path\")"
        );
        assert_eq!(
            problem(with(catalog(), "store_path", json!(CURL_BIN))),
            "has fields of both a catalog entry (\"attr_path\") and a store-path entry \
             (\"store_path\")"
        );
        assert_eq!(
            problem(with(catalog(), "locked-url", json!("github:a/b"))),
            "has fields of both a catalog entry (\"attr_path\") and a flake entry \
             (\"locked-url\")"
        );
    }

    #[test]
    fn malformed_catalog_entries_name_the_field() {
        assert_eq!(
            problem(without(catalog(), "install_id")),
            "catalog entry has no \"install_id\""
        );
        assert_eq!(
            problem(with(catalog(), "system", Value::Null)),
            "catalog entry has no \"system\""
        );
        assert_eq!(
            problem(with(catalog(), "system", json!(64))),
            "catalog entry: \"system\" must be a non-empty string, not a number"
        );
        assert_eq!(
            problem(without(catalog(), "outputs")),
            "catalog entry has no \"outputs\""
        );
        assert_eq!(
            problem(with(catalog(), "outputs", json!([CURL_BIN]))),
            "catalog entry: \"outputs\" must be an object, not an array"
        );
        assert_eq!(
            problem(with(catalog(), "outputs", json!({}))),
            "catalog entry: \"outputs\" is empty"
        );
        assert_eq!(
            problem(with(catalog(), "outputs", json!({ "out": 1 }))),
            "catalog entry: \"outputs.out\" must be a store path string, not a number"
        );
        assert_eq!(
            problem(with(
                catalog(),
                "outputs",
                json!({ "out": format!("{CURL_OUT}/bin") })
            )),
            format!(
                "catalog entry: \"outputs.out\": invalid store path \"{CURL_OUT}/bin\": only a \
                 store object itself is allowed, nothing after its name (found \"/bin\")"
            )
        );
        assert_eq!(
            problem(with(catalog(), "outputs_to_install", json!("bin"))),
            "catalog entry: \"outputs_to_install\" must be an array of strings, not a string"
        );
        assert_eq!(
            problem(with(catalog(), "outputs_to_install", json!(["bin", "doc"]))),
            "catalog entry: \"outputs_to_install\" names output \"doc\", which is not in \
             \"outputs\""
        );
    }
}
