//! The packages of an environment on one system: the manifest's descriptors, with the store
//! paths the lock holds for them.
//!
//! The lock must have been made from this very manifest; when it was not, nothing is guessed
//! (an older lock could name other versions, a newer one other packages): the environment is
//! refused with the first key on which the two disagree.

use std::collections::HashMap;

use crate::install_descriptor::{InstallDescriptor, PackageSource};
use crate::lock::Lockfile;
use crate::lock_entry::{LockEntry, LockEntryKind};
use crate::manifest::Manifest;
use crate::manifest_json::{describe, first_difference};
use crate::outputs::{choose_outputs, ResolvedOutput};
use crate::resolve::ResolvedPackage;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackagesError {
    #[error("the environment supports systems {}, not {system:?}", quoted_list(.supported))]
    SystemNotSupported {
        system: String,
        supported: Vec<String>,
    },
    #[error(
        "manifest.lock was made from another manifest: {key:?} is {manifest} in manifest.toml \
         but {lock} in the lock"
    )]
    ManifestMismatch {
        /// Dotted key, e.g. `install.curl.version`.
        key: String,
        manifest: String,
        lock: String,
    },
    #[error(
        "install id {install_id:?} is a {kind} descriptor, whose store paths only a \
         manifest.lock gives, and there is no manifest.lock"
    )]
    NeedsLock {
        install_id: String,
        kind: &'static str,
    },
    #[error("manifest.lock has no entry for install id {install_id:?} on system {system:?}")]
    MissingLockEntry { install_id: String, system: String },
    #[error(
        "manifest.lock has an entry for install id {install_id:?} (system {system:?}) that \
         manifest.toml does not install"
    )]
    UnknownInstallId { install_id: String, system: String },
    #[error(
        "install id {install_id:?} is a {descriptor} descriptor in manifest.toml but a {entry} \
         entry in manifest.lock (system {system:?})"
    )]
    KindMismatch {
        install_id: String,
        system: String,
        descriptor: &'static str,
        entry: LockEntryKind,
    },
    #[error(
        "install id {install_id:?} is {manifest} in manifest.toml but {lock} in manifest.lock \
         (system {system:?})"
    )]
    StorePathMismatch {
        install_id: String,
        system: String,
        manifest: String,
        lock: String,
    },
    #[error(
        "install id {install_id:?} asks for output {output:?}, but its manifest.lock entry for \
         system {system:?} has only {}", quoted_list(.available)
    )]
    UnknownOutput {
        install_id: String,
        system: String,
        output: String,
        available: Vec<String>,
    },
}

fn quoted_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|item| format!("{item:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The packages of `manifest` on `system`, ordered by priority (lower wins collisions, so it
/// comes first), then install id.
pub(crate) fn resolve_packages(
    manifest: &Manifest,
    lock: Option<&Lockfile>,
    system: &str,
) -> Result<Vec<ResolvedPackage>, PackagesError> {
    if !manifest.options.supports(system) {
        return Err(PackagesError::SystemNotSupported {
            system: system.to_string(),
            supported: manifest.options.systems.clone().unwrap_or_default(),
        });
    }
    let entries = match lock {
        Some(lock) => entries_for_system(manifest, lock, system)?,
        None => HashMap::new(),
    };

    let mut packages = Vec::new();
    for (install_id, descriptor) in &manifest.install {
        if !descriptor.applies_to(system) {
            continue;
        }
        let entry = entries.get(install_id.as_str()).copied();
        let outputs = package_outputs(install_id, descriptor, entry, lock.is_some(), system)?;
        packages.push(ResolvedPackage {
            flake: entry.and_then(|entry| entry.flake.clone()),
            install_id: install_id.clone(),
            // The lock's `priority` is Flox's copy of this one, and the manifests agree; the
            // descriptor also covers unlocked store paths and flake entries without one.
            priority: descriptor.priority,
            outputs,
        });
    }
    packages.sort_by(|a, b| (a.priority, &a.install_id).cmp(&(b.priority, &b.install_id)));
    Ok(packages)
}

/// Checks `lock` against `manifest` and returns its entries for `system` by install id.
fn entries_for_system<'a>(
    manifest: &Manifest,
    lock: &'a Lockfile,
    system: &str,
) -> Result<HashMap<&'a str, &'a LockEntry>, PackagesError> {
    if let Some(difference) = first_difference(&manifest.json, lock.own_manifest()) {
        return Err(PackagesError::ManifestMismatch {
            key: if difference.key.is_empty() {
                "(the whole manifest)".to_string()
            } else {
                difference.key
            },
            manifest: describe(&difference.left),
            lock: describe(&difference.right),
        });
    }
    let mut entries = HashMap::new();
    for entry in &lock.packages {
        if !manifest.install.contains_key(&entry.install_id) {
            // With includes, the lock also holds the included environments' packages;
            // nixlet installs only the environment's own (see `[include]` in manifest.rs).
            if lock.composer.is_some() {
                tracing::debug!(
                    install_id = %entry.install_id,
                    system = %entry.system,
                    "lock entry from an included environment left out"
                );
                continue;
            }
            return Err(PackagesError::UnknownInstallId {
                install_id: entry.install_id.clone(),
                system: entry.system.clone(),
            });
        }
        if entry.system == system {
            entries.insert(entry.install_id.as_str(), entry);
        }
    }
    Ok(entries)
}

fn package_outputs(
    install_id: &str,
    descriptor: &InstallDescriptor,
    entry: Option<&LockEntry>,
    have_lock: bool,
    system: &str,
) -> Result<Vec<ResolvedOutput>, PackagesError> {
    let Some(entry) = entry else {
        return match &descriptor.source {
            // A store path is its own lock.
            PackageSource::StorePath(path) => Ok(vec![ResolvedOutput {
                name: crate::lock_entry::STORE_PATH_OUTPUT.to_string(),
                store_path: path.clone(),
                to_install: true,
            }]),
            source if !have_lock => Err(PackagesError::NeedsLock {
                install_id: install_id.to_string(),
                kind: source.kind(),
            }),
            _ => Err(PackagesError::MissingLockEntry {
                install_id: install_id.to_string(),
                system: system.to_string(),
            }),
        };
    };
    let expected_kind = match &descriptor.source {
        PackageSource::Catalog { .. } => LockEntryKind::Catalog,
        PackageSource::Flake { .. } => LockEntryKind::Flake,
        PackageSource::StorePath(_) => LockEntryKind::StorePath,
    };
    if entry.kind != expected_kind {
        return Err(PackagesError::KindMismatch {
            install_id: install_id.to_string(),
            system: system.to_string(),
            descriptor: descriptor.source.kind(),
            entry: entry.kind,
        });
    }
    if let PackageSource::StorePath(path) = &descriptor.source {
        let locked = &entry.outputs[crate::lock_entry::STORE_PATH_OUTPUT];
        if locked != path {
            return Err(PackagesError::StorePathMismatch {
                install_id: install_id.to_string(),
                system: system.to_string(),
                manifest: path.to_string(),
                lock: locked.to_string(),
            });
        }
    }
    choose_outputs(entry, descriptor.source.selected_outputs()).map_err(|unknown| {
        PackagesError::UnknownOutput {
            install_id: install_id.to_string(),
            system: system.to_string(),
            output: unknown.output,
            available: unknown.available,
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const MANIFEST: &str = include_str!("../tests/fixtures/flox-env/manifest.toml");
    const LOCK: &str = include_str!("../tests/fixtures/flox-env/manifest.lock");

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST).unwrap()
    }

    fn lock_json() -> Value {
        serde_json::from_str(LOCK).unwrap()
    }

    fn lock_of(value: &Value) -> Lockfile {
        Lockfile::parse(value.to_string().as_bytes()).unwrap()
    }

    fn resolve(
        manifest: &Manifest,
        lock: &Value,
        system: &str,
    ) -> Result<Vec<ResolvedPackage>, PackagesError> {
        resolve_packages(manifest, Some(&lock_of(lock)), system)
    }

    fn error_of(manifest: &Manifest, lock: &Value, system: &str) -> String {
        resolve(manifest, lock, system).unwrap_err().to_string()
    }

    /// (install id, priority, [(output, to_install)]) for compact comparisons.
    type Summary = Vec<(String, u32, Vec<(String, bool)>)>;
    type Expected<'a> = &'a [(&'a str, u32, &'a [(&'a str, bool)])];

    fn summary(packages: &[ResolvedPackage]) -> Summary {
        packages
            .iter()
            .map(|package| {
                (
                    package.install_id.clone(),
                    package.priority,
                    package
                        .outputs
                        .iter()
                        .map(|output| (output.name.clone(), output.to_install))
                        .collect(),
                )
            })
            .collect()
    }

    fn expected(items: Expected) -> Summary {
        items
            .iter()
            .map(|(id, priority, outputs)| {
                (
                    id.to_string(),
                    *priority,
                    outputs.iter().map(|(n, t)| (n.to_string(), *t)).collect(),
                )
            })
            .collect()
    }

    /// Removes the entry for `install_id` on `system` from the lock.
    fn remove_entry(lock: &mut Value, install_id: &str, system: &str) {
        lock["packages"]
            .as_array_mut()
            .unwrap()
            .retain(|entry| !(entry["install_id"] == install_id && entry["system"] == system));
    }

    fn entry_mut<'a>(lock: &'a mut Value, install_id: &str, system: &str) -> &'a mut Value {
        lock["packages"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|entry| entry["install_id"] == install_id && entry["system"] == system)
            .unwrap()
    }

    #[test]
    fn the_fixture_resolves_on_x86_64_linux_by_priority_with_outputs_as_flox_chooses() {
        let packages = resolve(&manifest(), &lock_json(), "x86_64-linux").unwrap();
        assert_eq!(
            summary(&packages),
            expected(&[
                ("bash", 1, &[("out", true)]),
                (
                    "jq",
                    4,
                    &[
                        ("bin", true),
                        ("man", true),
                        ("dev", false),
                        ("doc", false),
                        ("out", false)
                    ]
                ),
                (
                    "curl",
                    5,
                    &[
                        ("bin", true),
                        ("man", true),
                        ("dev", false),
                        ("devdoc", false),
                        ("out", false)
                    ]
                ),
                ("hello", 5, &[("out", true)]),
                (
                    "cuda_cudart",
                    8,
                    &[
                        ("out", true),
                        ("dev", false),
                        ("lib", false),
                        ("static", false)
                    ]
                ),
            ])
        );
        let lock = lock_json();
        let curl = entry_mut(&mut lock.clone(), "curl", "x86_64-linux").clone();
        assert_eq!(
            packages[2].outputs[0].store_path.to_string(),
            curl["outputs"]["bin"].as_str().unwrap()
        );
        // Only the flake package says which flake it comes from (what a node may build).
        let jq = entry_mut(&mut lock.clone(), "jq", "x86_64-linux").clone();
        let flake = packages[1].flake.as_ref().unwrap();
        assert_eq!(flake.locked_url, jq["locked-url"].as_str().unwrap());
        assert_eq!(
            flake.attr_path,
            jq["locked-flake-attr-path"].as_str().unwrap()
        );
        assert!(packages
            .iter()
            .filter(|p| p.install_id != "jq")
            .all(|p| p.flake.is_none()));
    }

    #[test]
    fn only_the_node_systems_entries_count() {
        let manifest = manifest();
        let ids = |system: &str| -> Vec<String> {
            resolve(&manifest, &lock_json(), system)
                .unwrap()
                .into_iter()
                .map(|package| package.install_id)
                .collect()
        };
        assert_eq!(
            ids("aarch64-linux"),
            vec!["jq", "curl", "hello", "cuda_cudart"]
        );
        assert_eq!(ids("aarch64-darwin"), vec!["jq", "curl", "hello"]);
        // Another system's paths never leak in.
        let lock = lock_json();
        let arm = resolve(&manifest, &lock, "aarch64-linux").unwrap();
        let mut lock_copy = lock.clone();
        let arm_hello = entry_mut(&mut lock_copy, "hello", "aarch64-linux");
        assert_eq!(
            arm[2].outputs[0].store_path.to_string(),
            arm_hello["outputs"]["out"].as_str().unwrap()
        );
    }

    #[test]
    fn a_system_outside_options_systems_is_refused() {
        assert_eq!(
            error_of(&manifest(), &lock_json(), "riscv64-linux"),
            "the environment supports systems \"aarch64-darwin\", \"aarch64-linux\", \
             \"x86_64-darwin\", \"x86_64-linux\", not \"riscv64-linux\""
        );
    }

    #[test]
    fn a_catalog_descriptor_without_an_entry_for_the_system_names_both() {
        let mut lock = lock_json();
        remove_entry(&mut lock, "curl", "x86_64-linux");
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "manifest.lock has no entry for install id \"curl\" on system \"x86_64-linux\""
        );
        // The other systems still resolve.
        assert!(resolve(&manifest(), &lock, "aarch64-linux").is_ok());
    }

    #[test]
    fn a_flake_descriptor_without_an_entry_for_the_system_names_both() {
        let mut lock = lock_json();
        remove_entry(&mut lock, "jq", "aarch64-linux");
        assert_eq!(
            error_of(&manifest(), &lock, "aarch64-linux"),
            "manifest.lock has no entry for install id \"jq\" on system \"aarch64-linux\""
        );
    }

    #[test]
    fn without_a_lock_catalog_and_flake_descriptors_cannot_resolve() {
        assert_eq!(
            resolve_packages(&manifest(), None, "x86_64-linux")
                .unwrap_err()
                .to_string(),
            "install id \"cuda_cudart\" is a catalog descriptor, whose store paths only a \
             manifest.lock gives, and there is no manifest.lock"
        );
        let flake_only =
            Manifest::parse("version = 1\n[install]\njq.flake = \"github:a/b\"").unwrap();
        assert_eq!(
            resolve_packages(&flake_only, None, "x86_64-linux")
                .unwrap_err()
                .to_string(),
            "install id \"jq\" is a flake descriptor, whose store paths only a manifest.lock \
             gives, and there is no manifest.lock"
        );
    }

    #[test]
    fn store_paths_need_no_lock() {
        let manifest = Manifest::parse(
            "version = 1\n[install]\nbash.store-path = \
             \"/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26\"",
        )
        .unwrap();
        let packages = resolve_packages(&manifest, None, "x86_64-linux").unwrap();
        assert_eq!(
            summary(&packages),
            expected(&[("bash", 5, &[("out", true)])])
        );
    }

    #[test]
    fn a_lock_made_from_another_manifest_is_refused_naming_the_key() {
        let mut lock = lock_json();
        lock["manifest"]["install"]["curl"]["version"] = json!("^8.6");
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "manifest.lock was made from another manifest: \"install.curl.version\" is \
             \"^8.12\" in manifest.toml but \"^8.6\" in the lock"
        );
        let mut lock = lock_json();
        lock["manifest"].as_object_mut().unwrap().remove("vars");
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "manifest.lock was made from another manifest: \"vars\" is \
             {\"GREETING\":\"hello\",\"MESSAGE\":\"${GREETING} from flox\"} in manifest.toml but \
             absent in the lock"
        );
        let mut lock = lock_json();
        lock["manifest"]["install"]["wget"] = json!({ "pkg-path": "wget" });
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "manifest.lock was made from another manifest: \"install.wget\" is absent in \
             manifest.toml but {\"pkg-path\":\"wget\"} in the lock"
        );
    }

    #[test]
    fn formatting_and_flox_serialisation_differences_are_not_disagreements() {
        let mut lock = lock_json();
        // Flox writes `"options": {}` and an empty `[hook]` as `{}`; key order is its own.
        lock["manifest"]["hook"] = json!({ "on-activate": "  export HOOK_RAN=1\n" });
        lock["manifest"]["services"] = json!({});
        assert!(resolve(&manifest(), &lock, "x86_64-linux").is_ok());
    }

    #[test]
    fn an_entry_for_an_install_id_the_manifest_lacks_is_refused() {
        let mut lock = lock_json();
        let mut stray = entry_mut(&mut lock, "hello", "x86_64-darwin").clone();
        stray["install_id"] = json!("wget");
        lock["packages"].as_array_mut().unwrap().push(stray);
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "manifest.lock has an entry for install id \"wget\" (system \"x86_64-darwin\") that \
             manifest.toml does not install"
        );
    }

    #[test]
    fn included_environments_packages_are_left_out() {
        let mut lock = lock_json();
        let own = lock["manifest"].clone();
        lock["compose"] = json!({ "composer": own, "include": [] });
        lock["manifest"]["install"]["base_tool"] = json!({ "pkg-path": "ripgrep" });
        let mut included = entry_mut(&mut lock, "hello", "x86_64-linux").clone();
        included["install_id"] = json!("base_tool");
        lock["packages"].as_array_mut().unwrap().push(included);
        let packages = resolve(&manifest(), &lock, "x86_64-linux").unwrap();
        assert!(packages
            .iter()
            .all(|package| package.install_id != "base_tool"));
        assert_eq!(packages.len(), 5);
    }

    #[test]
    fn an_entry_of_another_kind_than_its_descriptor_is_refused() {
        let mut lock = lock_json();
        let bash_path = lock["manifest"]["install"]["bash"]["store-path"].clone();
        *entry_mut(&mut lock, "curl", "x86_64-linux") = json!({
            "install_id": "curl", "store_path": bash_path, "system": "x86_64-linux", "priority": 5
        });
        assert_eq!(
            error_of(&manifest(), &lock, "x86_64-linux"),
            "install id \"curl\" is a catalog descriptor in manifest.toml but a store-path entry \
             in manifest.lock (system \"x86_64-linux\")"
        );
    }

    #[test]
    fn a_store_path_entry_must_agree_with_its_descriptor() {
        let mut lock = lock_json();
        let other = "/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26";
        entry_mut(&mut lock, "bash", "x86_64-linux")["store_path"] = json!(other);
        let manifest = manifest();
        let PackageSource::StorePath(path) = &manifest.install["bash"].source else {
            panic!("bash is a store path");
        };
        assert_eq!(
            error_of(&manifest, &lock, "x86_64-linux"),
            format!(
                "install id \"bash\" is {path} in manifest.toml but {other} in manifest.lock \
                 (system \"x86_64-linux\")"
            )
        );
    }

    #[test]
    fn outputs_asked_for_must_exist_in_the_lock() {
        let text = MANIFEST.replace(
            "curl.version = \"^8.12\"",
            "curl.version = \"^8.12\"\ncurl.outputs = [\"doc\"]",
        );
        let manifest = Manifest::parse(&text).unwrap();
        let mut lock = lock_json();
        lock["manifest"]["install"]["curl"]["outputs"] = json!(["doc"]);
        assert_eq!(
            error_of(&manifest, &lock, "x86_64-linux"),
            "install id \"curl\" asks for output \"doc\", but its manifest.lock entry for system \
             \"x86_64-linux\" has only \"bin\", \"dev\", \"devdoc\", \"man\", \"out\""
        );
    }

    #[test]
    fn outputs_all_makes_every_output_but_stubs_win() {
        let text = MANIFEST.replace(
            "cuda_cudart.priority = 8",
            "cuda_cudart.priority = 8\ncuda_cudart.outputs = \"all\"",
        );
        let manifest = Manifest::parse(&text).unwrap();
        let mut lock = lock_json();
        lock["manifest"]["install"]["cuda_cudart"]["outputs"] = json!("all");
        let packages = resolve(&manifest, &lock, "x86_64-linux").unwrap();
        let cuda = packages
            .iter()
            .find(|p| p.install_id == "cuda_cudart")
            .unwrap();
        assert_eq!(
            summary(std::slice::from_ref(cuda)),
            expected(&[(
                "cuda_cudart",
                8,
                &[
                    ("dev", true),
                    ("lib", true),
                    ("out", true),
                    ("static", true)
                ]
            )])
        );
    }
}
