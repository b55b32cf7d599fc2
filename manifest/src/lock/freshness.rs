//! Whether a `manifest.lock` still belongs to the `manifest.toml` beside it.
//!
//! Flox calls a lock up to date when the manifest, parsed, equals the lock's copy of the user's
//! manifest (flox repo, `cli/flox-manifest/src/lockfile/mod.rs`,
//! `is_up_to_date_with_serialized_manifest`: `compose.composer` with includes, else `manifest`).
//! The copy is Flox's normalised serialisation, so the bytes rarely match, and the CLI simply
//! re-locks when they differ. nixlet cannot re-lock; it runs what was locked, and tells apart:
//!
//! - a stale lock: `manifest.toml` asks for a package the lock does not hold. Running the lock
//!   would silently start the container without it, or with another one, so this is refused,
//!   naming the install ids and keys. That is an install id the lock has never heard of, or
//!   one whose descriptor changed where Flox, re-locking, would resolve it again
//!   (`invalidates_existing_resolution` in the flox repo,
//!   `cli/flox-manifest/src/parsed/v1_10_0/package_descriptor.rs`, used by
//!   `cli/flox-rust-sdk/src/providers/lock_manifest.rs`): a catalog descriptor's `pkg-path`,
//!   `pkg-group` or `version`; any key of a flake descriptor; the kind of descriptor. A
//!   store-path descriptor is never resolved, so it is stale when its path changed. A
//!   descriptor whose `systems` now include the node's system where the locked one left it
//!   out asks for a package the lock has no entry for here, and is stale on that system;
//! - any other difference (a priority, a new variable, a narrower `systems`, formatting Flox
//!   normalises): the lock is still the complete environment Flox would build from the same
//!   packages, so it runs, with a warning that names the first differing key. When Flox
//!   migrated the manifest to a newer schema as it locked (a `version = 1` manifest.toml beside
//!   a `schema-version` lock), the version keys and the `outputs` the migration adds are not
//!   compared (flox repo, `cli/flox-manifest/src/migrate/v1_to_v1_10_0.rs`).

use serde_json::Value;

use crate::install_descriptor::{InstallDescriptor, PackageSource};
use crate::lock::Lockfile;
use crate::manifest::Manifest;
use crate::manifest_json::{describe, first_difference};
use crate::packages::quoted_list;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "manifest.toml {}: the lock is older than the manifest. Re-lock the environment with the \
     flox CLI (`flox edit`, or `flox activate` in the project directory) and publish both \
     files again",
    what_is_stale(.install_ids, .changed)
)]
pub struct StaleLock {
    /// Install ids the lock has never heard of, sorted.
    pub install_ids: Vec<String>,
    /// Install ids the lock has, asked for differently, sorted by install id.
    pub changed: Vec<ChangedDescriptor>,
}

/// One key of an install descriptor whose change means the locked package is not the one
/// asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedDescriptor {
    pub install_id: String,
    /// The descriptor's key, e.g. `version`; when the kind of descriptor changed, the key that
    /// gives manifest.toml's its kind (`pkg-path`, `flake` or `store-path`).
    pub key: &'static str,
    /// The values as `describe` shows them.
    pub in_manifest: String,
    pub in_lock: String,
}

fn what_is_stale(install_ids: &[String], changed: &[ChangedDescriptor]) -> String {
    let missing = (!install_ids.is_empty()).then(|| {
        let noun = if install_ids.len() == 1 {
            "install id"
        } else {
            "install ids"
        };
        format!(
            "installs {noun} {} that manifest.lock does not lock",
            quoted_list(install_ids)
        )
    });
    let changed = (!changed.is_empty()).then(|| {
        let keys: Vec<String> = changed
            .iter()
            .map(|change| {
                format!(
                    "{:?} ({} in manifest.toml, {} in the lock)",
                    format!("install.{}.{}", change.install_id, change.key),
                    change.in_manifest,
                    change.in_lock
                )
            })
            .collect();
        format!(
            "asks for another package than manifest.lock locked at {}",
            keys.join(", ")
        )
    });
    [missing, changed]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", and ")
}

/// `Ok(None)` when the lock was made from this manifest, `Ok(Some(warning))` when it differs
/// in what the lock can still run, an error when the lock lacks a package the manifest
/// installs on `system`.
pub(crate) fn check_freshness(
    manifest: &Manifest,
    lock: &Lockfile,
    system: &str,
) -> Result<Option<String>, StaleLock> {
    let locked = lock.own_manifest();
    let migrated = manifest.schema != locked.schema;
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    for (install_id, descriptor) in &manifest.install {
        match locked.install.get(install_id) {
            None => missing.push(install_id.clone()),
            Some(locked_descriptor) => {
                if let Some(key) =
                    changed_resolution(descriptor, locked_descriptor, system, migrated)
                {
                    let value = |manifest: &Manifest| {
                        describe(&manifest.json["install"][install_id].get(key).cloned())
                    };
                    changed.push(ChangedDescriptor {
                        install_id: install_id.clone(),
                        key,
                        in_manifest: value(manifest),
                        in_lock: value(locked),
                    });
                }
            }
        }
    }
    if !missing.is_empty() || !changed.is_empty() {
        return Err(StaleLock {
            install_ids: missing,
            changed,
        });
    }
    let (ours, theirs) = (
        comparable(&manifest.json, migrated),
        comparable(&locked.json, migrated),
    );
    Ok(first_difference(&ours, &theirs).map(|difference| {
        let key = if difference.key.is_empty() {
            "(the whole manifest)".to_string()
        } else {
            difference.key
        };
        format!(
            "manifest.toml differs from the manifest manifest.lock was made from at {key:?} \
                 ({} in manifest.toml, {} in the lock); nixlet runs what was locked",
            describe(&difference.left),
            describe(&difference.right)
        )
    }))
}

/// The first key of `ours` (manifest.toml) whose difference from `locked` (the lock's copy)
/// means the lock does not hold the package asked for on `system`, or `None`.
fn changed_resolution(
    ours: &InstallDescriptor,
    locked: &InstallDescriptor,
    system: &str,
    migrated: bool,
) -> Option<&'static str> {
    let newly_wanted_here = ours.applies_to(system) && !locked.applies_to(system);
    match (&ours.source, &locked.source) {
        (
            PackageSource::Catalog {
                pkg_path,
                version,
                pkg_group,
                ..
            },
            PackageSource::Catalog {
                pkg_path: locked_pkg_path,
                version: locked_version,
                pkg_group: locked_pkg_group,
                ..
            },
        ) => [
            (pkg_path != locked_pkg_path, "pkg-path"),
            (pkg_group != locked_pkg_group, "pkg-group"),
            (version != locked_version, "version"),
            (newly_wanted_here, "systems"),
        ]
        .into_iter()
        .find_map(|(differs, key)| differs.then_some(key)),
        // Flox compares flake descriptors whole (`this != other`).
        (
            PackageSource::Flake { flake, outputs },
            PackageSource::Flake {
                flake: locked_flake,
                outputs: locked_outputs,
            },
        ) => [
            (flake != locked_flake, "flake"),
            (!migrated && outputs != locked_outputs, "outputs"),
            (ours.systems != locked.systems, "systems"),
            (ours.priority != locked.priority, "priority"),
        ]
        .into_iter()
        .find_map(|(differs, key)| differs.then_some(key)),
        (PackageSource::StorePath(path), PackageSource::StorePath(locked_path)) => [
            (path != locked_path, "store-path"),
            (newly_wanted_here, "systems"),
        ]
        .into_iter()
        .find_map(|(differs, key)| differs.then_some(key)),
        // Another kind of descriptor: named by the key that makes manifest.toml's its kind.
        (source, _) => Some(source.kind_key()),
    }
}

/// `json`, without what a schema migration changes when `migrated`.
fn comparable(json: &Value, migrated: bool) -> Value {
    let mut json = json.clone();
    if migrated {
        if let Some(top) = json.as_object_mut() {
            top.remove("version");
            top.remove("schema-version");
        }
        if let Some(install) = json.get_mut("install").and_then(Value::as_object_mut) {
            for descriptor in install.values_mut().filter_map(Value::as_object_mut) {
                descriptor.remove("outputs");
            }
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";
    const OTHER_HELLO: &str = "/nix/store/1c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.2";
    const SYSTEM: &str = "x86_64-linux";

    fn lock(manifest: serde_json::Value) -> Lockfile {
        let document = json!({ "lockfile-version": 1, "manifest": manifest, "packages": [] });
        Lockfile::parse(document.to_string().as_bytes()).unwrap()
    }

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text).unwrap()
    }

    #[test]
    fn a_lock_of_this_manifest_is_fresh_whatever_flox_normalised() {
        let toml = manifest(&format!(
            "schema-version = \"1.14.0\"\n[install]\nhello.store-path = \"{HELLO}\"\n[hook]\n\
             [vars]\n[options]\n"
        ));
        let locked = lock(json!({
            "schema-version": "1.14.0",
            "install": { "hello": { "store-path": HELLO, "priority": null } },
            "options": { "allow": {} }
        }));
        assert_eq!(check_freshness(&toml, &locked, SYSTEM), Ok(None));
    }

    #[test]
    fn packages_the_lock_lacks_make_it_stale() {
        let toml = manifest(&format!(
            "version = 1\n[install]\nhello.store-path = \"{HELLO}\"\njq.pkg-path = \"jq\"\n\
             curl.pkg-path = \"curl\""
        ));
        let locked = lock(json!({ "version": 1, "install": { "hello": { "store-path": HELLO } } }));
        let stale = check_freshness(&toml, &locked, SYSTEM).unwrap_err();
        assert_eq!(stale.install_ids, vec!["curl", "jq"]);
        assert_eq!(
            stale.to_string(),
            "manifest.toml installs install ids \"curl\", \"jq\" that manifest.lock does not \
             lock: the lock is older than the manifest. Re-lock the environment with the flox \
             CLI (`flox edit`, or `flox activate` in the project directory) and publish both \
             files again"
        );
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"");
        assert_eq!(
            check_freshness(&toml, &lock(json!({ "version": 1 })), SYSTEM)
                .unwrap_err()
                .to_string(),
            "manifest.toml installs install id \"jq\" that manifest.lock does not lock: the \
             lock is older than the manifest. Re-lock the environment with the flox CLI (`flox \
             edit`, or `flox activate` in the project directory) and publish both files again"
        );
    }

    #[test]
    fn a_lock_flox_migrated_to_a_newer_schema_is_fresh() {
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"");
        let locked = lock(json!({
            "schema-version": "1.14.0",
            "install": { "jq": { "pkg-path": "jq", "outputs": "all" } },
            "options": { "allow": { "licenses": [] } }
        }));
        assert_eq!(check_freshness(&toml, &locked, SYSTEM), Ok(None));
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"\njq.priority = 3");
        assert!(check_freshness(&toml, &locked, SYSTEM).unwrap().is_some());
    }

    #[test]
    fn other_differences_are_a_warning_naming_the_key() {
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"\njq.priority = 3");
        let locked = lock(json!({
            "version": 1,
            "install": { "jq": { "pkg-path": "jq", "priority": 4 }, "old": { "pkg-path": "x" } }
        }));
        assert_eq!(
            check_freshness(&toml, &locked, SYSTEM),
            Ok(Some(
                "manifest.toml differs from the manifest manifest.lock was made from at \
                 \"install.jq.priority\" (3 in manifest.toml, 4 in the lock); nixlet runs what \
                 was locked"
                    .to_string()
            ))
        );
    }

    /// The key `check_freshness` finds stale when manifest.toml's `[install]` holds
    /// `ours` and the lock's `locked` (both TOML tables of one install id `pkg`).
    fn stale_key(ours: &str, locked: serde_json::Value) -> Option<&'static str> {
        let toml = manifest(&format!(
            "schema-version = \"1.10.0\"\n[install.pkg]\n{ours}"
        ));
        let locked = lock(json!({ "schema-version": "1.10.0", "install": { "pkg": locked } }));
        match check_freshness(&toml, &locked, SYSTEM) {
            Err(stale) => {
                assert!(stale.install_ids.is_empty());
                assert_eq!(stale.changed.len(), 1);
                Some(stale.changed[0].key)
            }
            Ok(_) => None,
        }
    }

    #[test]
    fn a_descriptor_flox_would_resolve_again_makes_it_stale() {
        let jq = json!({ "pkg-path": "jq", "version": "1.6", "pkg-group": "tools" });
        let catalog = "pkg-path = \"jq\"\nversion = \"1.6\"\npkg-group = \"tools\"\n";
        assert_eq!(stale_key(catalog, jq.clone()), None);
        let changed = |from: &str, to: &str| stale_key(&catalog.replace(from, to), jq.clone());
        assert_eq!(changed("1.6", "1.7"), Some("version"));
        assert_eq!(changed("\"jq\"", "\"gojq\""), Some("pkg-path"));
        assert_eq!(changed("tools", "toplevel"), Some("pkg-group"));
        assert_eq!(
            changed("\"jq\"\n", "\"jq\"\nsystems = [\"x86_64-linux\"]\n"),
            None,
            "systems that still include the node's are not a new resolution"
        );
        let arm_only = json!({ "pkg-path": "jq", "version": "1.6", "pkg-group": "tools",
                               "systems": ["aarch64-linux"] });
        assert_eq!(stale_key(catalog, arm_only), Some("systems"));
        assert_eq!(changed("\"jq\"\n", "\"jq\"\npriority = 1\n"), None);
        assert_eq!(changed("\"jq\"\n", "\"jq\"\noutputs = \"all\"\n"), None);
        assert_eq!(
            stale_key("flake = \"github:jqlang/jq\"", jq.clone()),
            Some("flake"),
            "another kind of descriptor"
        );

        let flake = json!({ "flake": "github:jqlang/jq" });
        assert_eq!(
            stale_key("flake = \"github:jqlang/jq\"", flake.clone()),
            None
        );
        assert_eq!(
            stale_key("flake = \"github:jqlang/jq/v1.7\"", flake.clone()),
            Some("flake")
        );
        assert_eq!(
            stale_key("flake = \"github:jqlang/jq\"\npriority = 2", flake.clone()),
            Some("priority")
        );
        assert_eq!(
            stale_key("flake = \"github:jqlang/jq\"\noutputs = [\"bin\"]", flake),
            Some("outputs")
        );

        let hello = json!({ "store-path": HELLO });
        assert_eq!(
            stale_key(&format!("store-path = \"{HELLO}\""), hello.clone()),
            None
        );
        assert_eq!(
            stale_key(&format!("store-path = \"{OTHER_HELLO}\""), hello.clone()),
            Some("store-path")
        );
        assert_eq!(
            stale_key(&format!("store-path = \"{HELLO}\"\npriority = 1"), hello),
            None
        );
    }

    #[test]
    fn a_stale_lock_names_every_install_id_and_key() {
        let toml = manifest(
            "version = 1\n[install]\ngo.pkg-path = \"go\"\ngo.version = \"^1.24.2\"\n\
             jq.pkg-path = \"jq\"\nrg.flake = \"github:BurntSushi/ripgrep\"\n\
             wget.pkg-path = \"wget\"",
        );
        let locked = lock(json!({ "version": 1, "install": {
            "go": { "pkg-path": "go", "version": "^1.23.1" },
            "rg": { "pkg-path": "ripgrep" }
        } }));
        let stale = check_freshness(&toml, &locked, SYSTEM).unwrap_err();
        assert_eq!(
            stale.to_string(),
            "manifest.toml installs install ids \"jq\", \"wget\" that manifest.lock does not \
             lock, and asks for another package than manifest.lock locked at \
             \"install.go.version\" (\"^1.24.2\" in manifest.toml, \"^1.23.1\" in the lock), \
             \"install.rg.flake\" (\"github:BurntSushi/ripgrep\" in manifest.toml, absent in \
             the lock): the lock is older than the manifest. Re-lock the environment with the \
             flox CLI (`flox edit`, or `flox activate` in the project directory) and publish \
             both files again"
        );
    }

    #[test]
    fn an_including_environment_is_compared_with_its_own_manifest_not_the_merged_one() {
        let toml = manifest(
            "schema-version = \"1.10.0\"\n[include]\nenvironments = [{ remote = \"acme/base\" }]\n\
             [install]\njq.pkg-path = \"jq\"",
        );
        let own = json!({
            "schema-version": "1.10.0",
            "include": { "environments": [{ "remote": "acme/base" }] },
            "install": { "jq": { "pkg-path": "jq" } }
        });
        let merged = json!({
            "schema-version": "1.10.0",
            "install": { "jq": { "pkg-path": "jq" }, "rg": { "pkg-path": "ripgrep" } }
        });
        let document = json!({
            "lockfile-version": 1,
            "manifest": merged,
            "packages": [],
            "compose": { "composer": own, "include": [], "warnings": [] }
        });
        let locked = Lockfile::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(check_freshness(&toml, &locked, SYSTEM), Ok(None));
    }
}
