//! Whether a `manifest.lock` still belongs to the `manifest.toml` beside it.
//!
//! Flox calls a lock up to date when the manifest, parsed, equals the lock's copy of the user's
//! manifest (flox repo, `cli/flox-manifest/src/lockfile/mod.rs`,
//! `is_up_to_date_with_serialized_manifest`: `compose.composer` with includes, else `manifest`).
//! The copy is Flox's normalised serialisation, so the bytes rarely match, and the CLI simply
//! re-locks when they differ. nixlet cannot re-lock; it runs what was locked, and tells apart:
//!
//! - a stale lock: `manifest.toml` installs a package the lock has never heard of. Running the
//!   lock would silently start the container without it, so this is refused, naming the
//!   install ids;
//! - any other difference (a changed version constraint, a new variable, formatting Flox
//!   normalises): the lock is still a complete environment, so it runs, with a warning that
//!   names the first differing key. When Flox migrated the manifest to a newer schema as it
//!   locked (a `version = 1` manifest.toml beside a `schema-version` lock), the version keys
//!   and the `outputs` the migration adds are not compared (flox repo,
//!   `cli/flox-manifest/src/migrate/v1_to_v1_10_0.rs`).

use serde_json::Value;

use crate::lock::Lockfile;
use crate::manifest::Manifest;
use crate::manifest_json::{describe, first_difference};
use crate::packages::quoted_list;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "manifest.toml installs {} that manifest.lock does not lock: the lock is older than the \
     manifest. Re-lock the environment with the flox CLI (`flox edit`, or `flox activate` in \
     the project directory) and publish both files again",
    install_ids_text(.install_ids)
)]
pub struct StaleLock {
    /// Sorted.
    pub install_ids: Vec<String>,
}

fn install_ids_text(ids: &[String]) -> String {
    let noun = if ids.len() == 1 {
        "install id"
    } else {
        "install ids"
    };
    format!("{noun} {}", quoted_list(ids))
}

/// `Ok(None)` when the lock was made from this manifest, `Ok(Some(warning))` when it differs
/// in what the lock can still run, an error when the lock lacks packages the manifest installs.
pub(crate) fn check_freshness(
    manifest: &Manifest,
    lock: &Lockfile,
) -> Result<Option<String>, StaleLock> {
    let locked = lock.own_manifest();
    let missing: Vec<String> = manifest
        .install
        .keys()
        .filter(|install_id| !locked.install.contains_key(*install_id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(StaleLock {
            install_ids: missing,
        });
    }
    let migrated = manifest.schema != locked.schema;
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
        assert_eq!(check_freshness(&toml, &locked), Ok(None));
    }

    #[test]
    fn packages_the_lock_lacks_make_it_stale() {
        let toml = manifest(&format!(
            "version = 1\n[install]\nhello.store-path = \"{HELLO}\"\njq.pkg-path = \"jq\"\n\
             curl.pkg-path = \"curl\""
        ));
        let locked = lock(json!({ "version": 1, "install": { "hello": { "store-path": HELLO } } }));
        let stale = check_freshness(&toml, &locked).unwrap_err();
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
            check_freshness(&toml, &lock(json!({ "version": 1 })))
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
        assert_eq!(check_freshness(&toml, &locked), Ok(None));
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"\njq.version = \"1\"");
        assert!(check_freshness(&toml, &locked).unwrap().is_some());
    }

    #[test]
    fn other_differences_are_a_warning_naming_the_key() {
        let toml = manifest("version = 1\n[install]\njq.pkg-path = \"jq\"\njq.version = \"1.7\"");
        let locked = lock(json!({
            "version": 1,
            "install": { "jq": { "pkg-path": "jq", "version": "1.6" }, "old": { "pkg-path": "x" } }
        }));
        assert_eq!(
            check_freshness(&toml, &locked),
            Ok(Some(
                "manifest.toml differs from the manifest manifest.lock was made from at \
                 \"install.jq.version\" (\"1.7\" in manifest.toml, \"1.6\" in the lock); nixlet \
                 runs what was locked"
                    .to_string()
            ))
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
        assert_eq!(check_freshness(&toml, &locked), Ok(None));
    }
}
