//! `manifest.lock`, Flox `"lockfile-version": 1`: the manifest it was made from, and every
//! package locked for every system the environment supports.
//!
//! ```json
//! { "lockfile-version": 1, "manifest": { "schema-version": "1.14.0", … }, "packages": [ … ] }
//! ```
//!
//! An environment that includes others (`[include]`) also has `compose`: `composer` is the
//! environment's own manifest, `include` the included ones, and `manifest` is then the merged
//! manifest, whose `install` names the included environments' packages too (flox repo,
//! `cli/flox-manifest/src/lockfile/mod.rs`: "For an environment that *does* include others,
//! this is the merged manifest that was locked"). The merged manifest is what Flox builds and
//! activates, so it is what nixlet runs.
//!
//! `"lockfile-version": 0` came from Flox before 1.0 (pkgdb): its packages are flake
//! attribute paths without store paths, keyed by system and install id. Flox stopped reading it
//! when pkgdb was removed (1.3.11; its `Lockfile` type only deserialises version 1), and without
//! store paths there is nothing nixlet could install, so it is refused with how to re-lock.

pub(crate) mod entry;
pub(crate) mod freshness;

use std::collections::HashMap;

use serde_json::Value;

use crate::lock::entry::{json_type, EntryProblem, LockEntry};
use crate::manifest::{Manifest, ManifestError};

const SUPPORTED_VERSION: u64 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockfile {
    /// The manifest that was locked: for an environment with includes, the merged one.
    pub manifest: Manifest,
    /// With includes, `compose.composer`: the manifest of the environment itself, which is what
    /// its `manifest.toml` says.
    pub composer: Option<Manifest>,
    /// With includes, the names of the included environments, in merge order.
    pub included: Vec<String>,
    /// In the lock's order.
    pub packages: Vec<LockEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    // The parser's message is part of ours, so it is not also a `source` (the chain would
    // repeat it).
    #[error("not valid json: {0}")]
    Syntax(serde_json::Error),
    #[error("must be a json object, not {0}")]
    NotAnObject(&'static str),
    #[error("has no \"lockfile-version\"")]
    MissingVersion,
    #[error(
        "is \"lockfile-version\": 0, written by flox before 1.0; its packages have no store \
         paths, and flox itself no longer reads it: re-lock the environment with flox 1.x (set \
         `version = 1` in manifest.toml, then `flox edit` or `flox activate` writes a \
         \"lockfile-version\": 1 lock)"
    )]
    VersionZero,
    #[error("\"lockfile-version\" {0} is not supported; nixlet reads \"lockfile-version\": 1")]
    UnsupportedVersion(String),
    #[error("has no {0:?}")]
    Missing(&'static str),
    #[error("{key:?} must be {expected}, not {found}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{key:?}: {problem}")]
    Manifest {
        /// `manifest` or `compose.composer`.
        key: &'static str,
        problem: Box<ManifestError>,
    },
    #[error("packages[{index}]{}: {problem}", identity(.install_id, .system))]
    Entry {
        index: usize,
        install_id: Option<String>,
        system: Option<String>,
        /// Boxed to keep lock errors small on the happy path.
        problem: Box<EntryProblem>,
    },
    #[error(
        "packages[{first}] and packages[{second}] both lock install id {install_id:?} for \
         system {system:?}"
    )]
    Duplicate {
        install_id: String,
        system: String,
        first: usize,
        second: usize,
    },
}

fn identity(install_id: &Option<String>, system: &Option<String>) -> String {
    match (install_id, system) {
        (Some(id), Some(system)) => format!(" (install id {id:?}, system {system:?})"),
        (Some(id), None) => format!(" (install id {id:?})"),
        _ => String::new(),
    }
}

impl Lockfile {
    pub fn parse(bytes: &[u8]) -> Result<Lockfile, LockError> {
        let document: Value = serde_json::from_slice(bytes).map_err(LockError::Syntax)?;
        let Value::Object(mut top) = document else {
            return Err(LockError::NotAnObject(json_type(&document)));
        };
        match top.get("lockfile-version") {
            None => return Err(LockError::MissingVersion),
            Some(version) if version.as_u64() == Some(SUPPORTED_VERSION) => {}
            // pkgdb wrote the number; some tools wrote it as a string.
            Some(version) if version.as_u64() == Some(0) || version.as_str() == Some("0") => {
                return Err(LockError::VersionZero)
            }
            Some(other) => return Err(LockError::UnsupportedVersion(other.to_string())),
        }
        let manifest = match top.remove("manifest") {
            None => return Err(LockError::Missing("manifest")),
            Some(manifest @ Value::Object(_)) => read_manifest("manifest", &manifest)?,
            Some(other) => return Err(wrong_type("manifest", "an object", &other)),
        };
        let (composer, included) = match top.remove("compose") {
            None | Some(Value::Null) => (None, Vec::new()),
            Some(Value::Object(mut compose)) => {
                let composer = match compose.remove("composer") {
                    Some(composer @ Value::Object(_)) => {
                        read_manifest("compose.composer", &composer)?
                    }
                    Some(other) => return Err(wrong_type("compose.composer", "an object", &other)),
                    None => return Err(LockError::Missing("compose.composer")),
                };
                (Some(composer), included_names(compose.get("include")))
            }
            Some(other) => return Err(wrong_type("compose", "an object", &other)),
        };
        let items = match top.get("packages") {
            None => return Err(LockError::Missing("packages")),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong_type("packages", "an array", other)),
        };

        let mut packages = Vec::with_capacity(items.len());
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let entry = LockEntry::from_json(item).map_err(|problem| {
                let (install_id, system) = LockEntry::identify(item);
                LockError::Entry {
                    index,
                    install_id,
                    system,
                    problem: Box::new(problem),
                }
            })?;
            let key = (entry.install_id.clone(), entry.system.clone());
            if let Some(first) = seen.insert(key, index) {
                return Err(LockError::Duplicate {
                    install_id: entry.install_id,
                    system: entry.system,
                    first,
                    second: index,
                });
            }
            packages.push(entry);
        }
        Ok(Lockfile {
            manifest,
            composer,
            included,
            packages,
        })
    }

    /// The manifest the environment's own `manifest.toml` was when it was locked: the
    /// composer with includes, else the locked manifest (flox repo,
    /// `cli/flox-manifest/src/lockfile/mod.rs`, `user_manifest`).
    pub fn own_manifest(&self) -> &Manifest {
        self.composer.as_ref().unwrap_or(&self.manifest)
    }
}

fn read_manifest(key: &'static str, value: &Value) -> Result<Manifest, LockError> {
    Manifest::from_json(value).map_err(|problem| LockError::Manifest {
        key,
        problem: Box::new(problem),
    })
}

/// The names Flox gave the included environments; only shown in messages, so anything
/// unexpected is left out rather than refused.
fn included_names(include: Option<&Value>) -> Vec<String> {
    include
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn wrong_type(key: &'static str, expected: &'static str, found: &Value) -> LockError {
    LockError::WrongType {
        key,
        expected,
        found: json_type(found),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lock::entry::LockEntryKind;

    const BASH: &str = "/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26";

    fn store_entry(system: &str) -> Value {
        json!({ "install_id": "bash", "store_path": BASH, "system": system, "priority": 5 })
    }

    fn lock(packages: Value) -> Value {
        json!({
            "lockfile-version": 1,
            "manifest": { "version": 1, "install": { "bash": { "store-path": BASH } }, "options": {} },
            "packages": packages
        })
    }

    fn error_of(value: Value) -> String {
        Lockfile::parse(value.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_the_manifest_copy_and_entries() {
        let value = lock(json!([
            store_entry("x86_64-linux"),
            store_entry("aarch64-linux")
        ]));
        let lockfile = Lockfile::parse(value.to_string().as_bytes()).unwrap();
        assert_eq!(
            lockfile.manifest.json,
            json!({ "version": 1, "install": { "bash": { "store-path": BASH } } })
        );
        assert_eq!(lockfile.composer, None);
        assert!(lockfile.included.is_empty());
        assert_eq!(lockfile.own_manifest(), &lockfile.manifest);
        assert_eq!(lockfile.packages.len(), 2);
        assert_eq!(lockfile.packages[1].system, "aarch64-linux");
        assert_eq!(lockfile.packages[1].kind, LockEntryKind::StorePath);
    }

    #[test]
    fn the_composer_is_the_own_manifest_of_an_including_environment() {
        let mut value = lock(json!([]));
        value["compose"] = json!({
            "composer": { "version": 1, "include": { "environments": [{ "remote": "acme/base" }] } },
            "include": [{ "name": "base", "descriptor": { "remote": "acme/base" }, "manifest": {} }],
            "warnings": []
        });
        let lockfile = Lockfile::parse(value.to_string().as_bytes()).unwrap();
        assert_eq!(
            lockfile.own_manifest().json,
            json!({ "version": 1, "include": { "environments": [{ "remote": "acme/base" }] } })
        );
        assert!(lockfile.own_manifest().includes_environments);
        assert_eq!(lockfile.included, vec!["base"]);
    }

    #[test]
    fn malformed_documents_are_named() {
        assert!(error_of(json!(null)).starts_with("must be a json object, not null"));
        assert!(Lockfile::parse(b"{\"lockfile-version\": 1,")
            .unwrap_err()
            .to_string()
            .starts_with("not valid json: EOF while parsing"));
        assert_eq!(
            error_of(json!({ "manifest": {}, "packages": [] })),
            "has no \"lockfile-version\""
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": 0, "packages": {} })),
            "is \"lockfile-version\": 0, written by flox before 1.0; its packages have no store \
             paths, and flox itself no longer reads it: re-lock the environment with flox 1.x \
             (set `version = 1` in manifest.toml, then `flox edit` or `flox activate` writes a \
             \"lockfile-version\": 1 lock)"
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": 2, "packages": [] })),
            "\"lockfile-version\" 2 is not supported; nixlet reads \"lockfile-version\": 1"
        );
        assert_eq!(
            error_of(
                json!({ "lockfile-version": 1, "manifest": { "version": 1, "hooks": { "a": "b" } }, "packages": [] })
            ),
            "\"manifest\": unknown key \"hooks\""
        );
        let mut composed = lock(json!([]));
        composed["compose"] = json!({ "composer": { "schema-version": "9.0.0" } });
        assert_eq!(
            error_of(composed),
            "\"compose.composer\": \"schema-version\" \"9.0.0\" is not supported; nixlet reads \
             `version = 1` and \"schema-version\" 1.10.0, 1.11.0, 1.12.0, 1.13.0, 1.14.0, 1.15.0, \
             1.16.0, 1.17.0, 1.18.0, 1.19.0 (a newer flox wrote this manifest: write it with an \
             older schema, or upgrade nixlet)"
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": "1" })),
            "\"lockfile-version\" \"1\" is not supported; nixlet reads \"lockfile-version\": 1"
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": 1, "packages": [] })),
            "has no \"manifest\""
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": 1, "manifest": "version = 1", "packages": [] })),
            "\"manifest\" must be an object, not a string"
        );
        assert_eq!(
            error_of(json!({ "lockfile-version": 1, "manifest": { "version": 1 } })),
            "has no \"packages\""
        );
        assert_eq!(
            error_of(
                json!({ "lockfile-version": 1, "manifest": { "version": 1 }, "packages": {} })
            ),
            "\"packages\" must be an array, not an object"
        );
        let mut composed = lock(json!([]));
        composed["compose"] = json!({ "include": [] });
        assert_eq!(error_of(composed), "has no \"compose.composer\"");
    }

    #[test]
    fn entry_errors_say_which_entry() {
        let mut broken = store_entry("aarch64-linux");
        broken["store_path"] = json!(7);
        assert_eq!(
            error_of(lock(json!([store_entry("x86_64-linux"), broken]))),
            "packages[1] (install id \"bash\", system \"aarch64-linux\"): store-path entry: \
             \"store_path\" must be a non-empty string, not a number"
        );
        assert_eq!(
            error_of(lock(json!([{ "install_id": "bash" }]))),
            "packages[0] (install id \"bash\"): is neither a catalog entry (with \"attr_path\"), \
             a flake entry (with \"locked-url\") nor a store-path entry (with \"store_path\")"
        );
        assert_eq!(
            error_of(lock(json!([3]))),
            "packages[0]: must be an object, not a number"
        );
    }

    #[test]
    fn two_entries_for_one_install_id_and_system_are_refused() {
        assert_eq!(
            error_of(lock(json!([
                store_entry("x86_64-linux"),
                store_entry("aarch64-linux"),
                store_entry("x86_64-linux")
            ]))),
            "packages[0] and packages[2] both lock install id \"bash\" for system \"x86_64-linux\""
        );
    }
}
