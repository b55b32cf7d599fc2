//! The packages of an environment on one system, with the store paths of the outputs it
//! installs.
//!
//! With a lock, the environment is the lock's own manifest (for `[include]`, the merged one) and
//! its packages are the lock's entries for the system, as Flox's environment builder takes them
//! (flox repo, `buildenv/buildenv.nix`: every package whose `system` is the one being built,
//! its descriptor looked up in the locked manifest's `install`), with the priority the lock
//! recorded. Without a lock only store-path descriptors can be installed: the others name
//! packages whose store paths only a lock knows.

use std::collections::HashMap;

use crate::install_descriptor::{InstallDescriptor, PackageSource};
use crate::lock::entry::{LockEntry, LockEntryKind, STORE_PATH_OUTPUT};
use crate::lock::Lockfile;
use crate::manifest::Manifest;
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
        "install id {install_id:?} is a {kind} descriptor, whose store paths only a \
         manifest.lock gives, and there is no manifest.lock"
    )]
    NeedsLock {
        install_id: String,
        kind: &'static str,
    },
    // Flox refuses such a lock the same way, with this advice (flox repo,
    // `cli/flox-rust-sdk/src/providers/buildenv.rs`, `LockfileMissingCurrentSystem`).
    #[error(
        "manifest.lock has no entry for install id {install_id:?} on system {system:?} (it is \
         locked for {}): re-lock the environment for {system:?} with the flox CLI (`flox \
         upgrade`, or add it to `options.systems` with `flox edit`)",
        quoted_list(.locked_systems)
    )]
    MissingLockEntry {
        install_id: String,
        system: String,
        /// The systems the lock has entries of this install id for, sorted.
        locked_systems: Vec<String>,
    },
    #[error(
        "manifest.lock has an entry for install id {install_id:?} (system {system:?}) that its \
         \"manifest\" does not install"
    )]
    UnknownInstallId { install_id: String, system: String },
    #[error(
        "install id {install_id:?} is a {descriptor} descriptor in the manifest but a {entry} \
         entry in manifest.lock (system {system:?})"
    )]
    KindMismatch {
        install_id: String,
        system: String,
        descriptor: &'static str,
        entry: LockEntryKind,
    },
    #[error(
        "install id {install_id:?} is {manifest} in the manifest but {lock} in manifest.lock \
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

pub(crate) fn quoted_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items
        .iter()
        .map(|item| format!("{item:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The packages of `environment` on `system`, ordered by priority (lower wins collisions, so it
/// comes first), then install id. `environment` is the lock's manifest when there is a lock.
pub(crate) fn resolve_packages(
    environment: &Manifest,
    lock: Option<&Lockfile>,
    system: &str,
) -> Result<Vec<ResolvedPackage>, PackagesError> {
    if !environment.options.supports(system) {
        return Err(PackagesError::SystemNotSupported {
            system: system.to_string(),
            supported: environment.options.systems.clone().unwrap_or_default(),
        });
    }
    let mut packages = match lock {
        Some(lock) => locked_packages(environment, lock, system)?,
        None => unlocked_packages(environment, system)?,
    };
    packages.sort_by(|a, b| (a.priority, &a.install_id).cmp(&(b.priority, &b.install_id)));
    Ok(packages)
}

fn locked_packages(
    environment: &Manifest,
    lock: &Lockfile,
    system: &str,
) -> Result<Vec<ResolvedPackage>, PackagesError> {
    let mut entries: HashMap<&str, &LockEntry> = HashMap::new();
    let mut packages = Vec::new();
    for entry in lock.packages.iter().filter(|entry| entry.system == system) {
        let install_id = entry.install_id.as_str();
        let descriptor =
            environment
                .install
                .get(install_id)
                .ok_or_else(|| PackagesError::UnknownInstallId {
                    install_id: install_id.to_string(),
                    system: system.to_string(),
                })?;
        let outputs = locked_outputs(environment, install_id, descriptor, entry)?;
        entries.insert(install_id, entry);
        packages.push(ResolvedPackage {
            install_id: install_id.to_string(),
            priority: entry.priority.unwrap_or(descriptor.priority),
            outputs,
            flake: entry.flake.clone(),
        });
    }
    // Flox locks every descriptor for every system it applies to, so a missing entry means a
    // lock that does not belong to this manifest: refuse rather than run without the package.
    for (install_id, descriptor) in &environment.install {
        if descriptor.applies_to(system) && !entries.contains_key(install_id.as_str()) {
            let mut locked_systems: Vec<String> = lock
                .packages
                .iter()
                .filter(|entry| entry.install_id == *install_id)
                .map(|entry| entry.system.clone())
                .collect();
            locked_systems.sort();
            locked_systems.dedup();
            return Err(PackagesError::MissingLockEntry {
                install_id: install_id.clone(),
                system: system.to_string(),
                locked_systems,
            });
        }
    }
    Ok(packages)
}

fn unlocked_packages(
    environment: &Manifest,
    system: &str,
) -> Result<Vec<ResolvedPackage>, PackagesError> {
    let mut packages = Vec::new();
    for (install_id, descriptor) in &environment.install {
        if !descriptor.applies_to(system) {
            continue;
        }
        let PackageSource::StorePath(path) = &descriptor.source else {
            return Err(PackagesError::NeedsLock {
                install_id: install_id.clone(),
                kind: descriptor.source.kind(),
            });
        };
        // A store path is its own lock.
        packages.push(ResolvedPackage {
            install_id: install_id.clone(),
            priority: descriptor.priority,
            outputs: vec![ResolvedOutput {
                name: STORE_PATH_OUTPUT.to_string(),
                store_path: path.clone(),
                to_install: true,
            }],
            flake: None,
        });
    }
    Ok(packages)
}

fn locked_outputs(
    environment: &Manifest,
    install_id: &str,
    descriptor: &InstallDescriptor,
    entry: &LockEntry,
) -> Result<Vec<ResolvedOutput>, PackagesError> {
    let system = &entry.system;
    let expected_kind = match &descriptor.source {
        PackageSource::Catalog { .. } => LockEntryKind::Catalog,
        PackageSource::Flake { .. } => LockEntryKind::Flake,
        PackageSource::StorePath(_) => LockEntryKind::StorePath,
    };
    if entry.kind != expected_kind {
        return Err(PackagesError::KindMismatch {
            install_id: install_id.to_string(),
            system: system.clone(),
            descriptor: descriptor.source.kind(),
            entry: entry.kind,
        });
    }
    if let PackageSource::StorePath(path) = &descriptor.source {
        let locked = &entry.outputs[STORE_PATH_OUTPUT];
        if locked != path {
            return Err(PackagesError::StorePathMismatch {
                install_id: install_id.to_string(),
                system: system.clone(),
                manifest: path.to_string(),
                lock: locked.to_string(),
            });
        }
        // A store path is installed whole, whatever the schema.
        return Ok(vec![ResolvedOutput {
            name: STORE_PATH_OUTPUT.to_string(),
            store_path: path.clone(),
            to_install: true,
        }]);
    }
    choose_outputs(
        entry,
        descriptor.source.selected_outputs(),
        environment.schema,
    )
    .map_err(|unknown| PackagesError::UnknownOutput {
        install_id: install_id.to_string(),
        system: system.clone(),
        output: unknown.output,
        available: unknown.available,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const LOCK: &str = include_str!("../tests/fixtures/flox-env/manifest.lock");

    fn lock_json() -> Value {
        serde_json::from_str(LOCK).unwrap()
    }

    fn resolve(lock: &Value, system: &str) -> Result<Vec<ResolvedPackage>, PackagesError> {
        let lock = Lockfile::parse(lock.to_string().as_bytes()).unwrap();
        resolve_packages(&lock.manifest, Some(&lock), system)
    }

    fn error_of(lock: &Value, system: &str) -> String {
        resolve(lock, system).unwrap_err().to_string()
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

    /// The fixture as a `schema-version` environment: outputs are then selected.
    fn with_schema_version(mut lock: Value) -> Value {
        let manifest = lock["manifest"].as_object_mut().unwrap();
        manifest.remove("version");
        manifest.insert("schema-version".into(), json!("1.14.0"));
        lock
    }

    #[test]
    fn the_fixture_resolves_on_x86_64_linux_by_priority_with_every_output_but_stubs() {
        let packages = resolve(&lock_json(), "x86_64-linux").unwrap();
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
        let mut lock = lock_json();
        let curl = entry_mut(&mut lock, "curl", "x86_64-linux").clone();
        assert_eq!(
            packages[2].outputs[0].store_path.to_string(),
            curl["outputs"]["bin"].as_str().unwrap()
        );
        // Only the flake package says which flake it comes from (what a node may build).
        let jq = entry_mut(&mut lock, "jq", "x86_64-linux").clone();
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
        let ids = |system: &str| -> Vec<String> {
            resolve(&lock_json(), system)
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
        let mut lock = lock_json();
        let arm = resolve(&lock, "aarch64-linux").unwrap();
        let arm_hello = entry_mut(&mut lock, "hello", "aarch64-linux");
        assert_eq!(
            arm[2].outputs[0].store_path.to_string(),
            arm_hello["outputs"]["out"].as_str().unwrap()
        );
    }

    #[test]
    fn a_system_outside_options_systems_is_refused() {
        assert_eq!(
            error_of(&lock_json(), "riscv64-linux"),
            "the environment supports systems \"aarch64-darwin\", \"aarch64-linux\", \
             \"x86_64-darwin\", \"x86_64-linux\", not \"riscv64-linux\""
        );
    }

    #[test]
    fn a_descriptor_without_an_entry_for_the_system_is_refused() {
        let mut lock = lock_json();
        remove_entry(&mut lock, "curl", "x86_64-linux");
        assert_eq!(
            error_of(&lock, "x86_64-linux"),
            "manifest.lock has no entry for install id \"curl\" on system \"x86_64-linux\" (it \
             is locked for \"aarch64-darwin\", \"aarch64-linux\", \"x86_64-darwin\"): re-lock \
             the environment for \"x86_64-linux\" with the flox CLI (`flox upgrade`, or add it \
             to `options.systems` with `flox edit`)"
        );
        // The other systems still resolve.
        assert!(resolve(&lock, "aarch64-linux").is_ok());
        let mut lock = lock_json();
        remove_entry(&mut lock, "jq", "aarch64-linux");
        assert_eq!(
            error_of(&lock, "aarch64-linux"),
            "manifest.lock has no entry for install id \"jq\" on system \"aarch64-linux\" (it \
             is locked for \"aarch64-darwin\", \"x86_64-darwin\", \"x86_64-linux\"): re-lock \
             the environment for \"aarch64-linux\" with the flox CLI (`flox upgrade`, or add it \
             to `options.systems` with `flox edit`)"
        );
    }

    #[test]
    fn without_a_lock_catalog_and_flake_descriptors_cannot_resolve() {
        let manifest =
            Manifest::parse(include_str!("../tests/fixtures/flox-env/manifest.toml")).unwrap();
        assert_eq!(
            resolve_packages(&manifest, None, "x86_64-linux")
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
             \"/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26\"\n\
             other = { store-path = \"/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-x\", \
             systems = [\"aarch64-linux\"] }",
        )
        .unwrap();
        let packages = resolve_packages(&manifest, None, "x86_64-linux").unwrap();
        assert_eq!(
            summary(&packages),
            expected(&[("bash", 5, &[("out", true)])])
        );
    }

    #[test]
    fn an_entry_for_an_install_id_the_locked_manifest_lacks_is_refused() {
        let mut lock = lock_json();
        let mut stray = entry_mut(&mut lock, "hello", "x86_64-linux").clone();
        stray["install_id"] = json!("wget");
        lock["packages"].as_array_mut().unwrap().push(stray);
        assert_eq!(
            error_of(&lock, "x86_64-linux"),
            "manifest.lock has an entry for install id \"wget\" (system \"x86_64-linux\") that \
             its \"manifest\" does not install"
        );
        // An entry for another system is not looked at, as Flox's builder does not.
        assert!(resolve(&lock, "aarch64-linux").is_ok());
    }

    #[test]
    fn an_included_environments_packages_are_installed() {
        let mut lock = lock_json();
        let own = lock["manifest"].clone();
        lock["compose"] = json!({ "composer": own, "include": [], "warnings": [] });
        lock["manifest"]["install"]["base_tool"] = json!({ "pkg-path": "ripgrep" });
        let mut included = entry_mut(&mut lock, "hello", "x86_64-linux").clone();
        included["install_id"] = json!("base_tool");
        lock["packages"].as_array_mut().unwrap().push(included);
        let packages = resolve(&lock, "x86_64-linux").unwrap();
        assert!(packages
            .iter()
            .any(|package| package.install_id == "base_tool"));
        assert_eq!(packages.len(), 6);
    }

    #[test]
    fn an_entry_of_another_kind_than_its_descriptor_is_refused() {
        let mut lock = lock_json();
        let bash_path = lock["manifest"]["install"]["bash"]["store-path"].clone();
        *entry_mut(&mut lock, "curl", "x86_64-linux") = json!({
            "install_id": "curl", "store_path": bash_path, "system": "x86_64-linux", "priority": 5
        });
        assert_eq!(
            error_of(&lock, "x86_64-linux"),
            "install id \"curl\" is a catalog descriptor in the manifest but a store-path entry \
             in manifest.lock (system \"x86_64-linux\")"
        );
    }

    #[test]
    fn a_store_path_entry_must_agree_with_its_descriptor() {
        let mut lock = lock_json();
        let other = "/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26";
        entry_mut(&mut lock, "bash", "x86_64-linux")["store_path"] = json!(other);
        let path = lock["manifest"]["install"]["bash"]["store-path"].clone();
        assert_eq!(
            error_of(&lock, "x86_64-linux"),
            format!(
                "install id \"bash\" is {} in the manifest but {other} in manifest.lock \
                 (system \"x86_64-linux\")",
                path.as_str().unwrap()
            )
        );
    }

    #[test]
    fn the_locked_priority_is_the_one_used() {
        let mut lock = lock_json();
        entry_mut(&mut lock, "hello", "x86_64-linux")["priority"] = json!(2);
        let packages = resolve(&lock, "x86_64-linux").unwrap();
        assert_eq!(packages[1].install_id, "hello");
        assert_eq!(packages[1].priority, 2);
        // Without one, the descriptor's.
        let mut lock = lock_json();
        entry_mut(&mut lock, "jq", "x86_64-linux")
            .as_object_mut()
            .unwrap()
            .remove("priority");
        let packages = resolve(&lock, "x86_64-linux").unwrap();
        assert_eq!(
            (packages[1].install_id.as_str(), packages[1].priority),
            ("jq", 4)
        );
    }

    #[test]
    fn schema_version_environments_install_the_selected_outputs_only() {
        let mut lock = with_schema_version(lock_json());
        lock["manifest"]["install"]["cuda_cudart"]["outputs"] = json!("all");
        lock["manifest"]["install"]["curl"]["outputs"] = json!(["dev", "bin"]);
        let packages = resolve(&lock, "x86_64-linux").unwrap();
        assert_eq!(
            summary(&packages),
            expected(&[
                ("bash", 1, &[("out", true)]),
                ("jq", 4, &[("bin", true), ("man", true)]),
                ("curl", 5, &[("dev", true), ("bin", true)]),
                ("hello", 5, &[("out", true)]),
                (
                    "cuda_cudart",
                    8,
                    &[
                        ("dev", true),
                        ("lib", true),
                        ("out", true),
                        ("static", true),
                        ("stubs", true)
                    ]
                ),
            ])
        );
    }

    #[test]
    fn outputs_asked_for_must_exist_in_the_lock() {
        let mut lock = with_schema_version(lock_json());
        lock["manifest"]["install"]["curl"]["outputs"] = json!(["doc"]);
        assert_eq!(
            error_of(&lock, "x86_64-linux"),
            "install id \"curl\" asks for output \"doc\", but its manifest.lock entry for system \
             \"x86_64-linux\" has only \"bin\", \"dev\", \"devdoc\", \"man\", \"out\""
        );
    }
}
