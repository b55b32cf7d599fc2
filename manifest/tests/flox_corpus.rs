//! Real environments that the flox CLI wrote, resolved as the shim resolves them and compared
//! with what Flox's own environment builder would install from the same lock.
//!
//! The expected store paths are computed here straight from the lock's JSON, following the
//! builder's rules (flox repo, `buildenv/buildenv.nix`, `inputSrcs`): every package whose
//! `system` is the node's; a store-path entry's path; for a `version = 1` manifest every output
//! but `stubs`; for a `schema-version` manifest the descriptor's `outputs` (`"all"` or a list),
//! else the entry's `outputs_to_install` (`outputs-to-install` for flakes). This is written
//! against the raw JSON on purpose, sharing no code with nixlet's typed reading.
//!
//! `tests/corpus/<name>/` holds environments copied from public repositories (each `SOURCE`
//! says which repository, commit and path). A directory may hold `EXPECT_ERROR`, the exact
//! message nixlet must refuse it with instead. An environment whose lock's manifest names
//! `options.systems` without one of the two Linux systems must be refused on that system, as
//! `flox activate` refuses it, naming the system. `NIXLET_FLOX_CORPUS_DIR` names a further
//! directory of such environments for `measure_external_corpus` (ignored by default), which
//! prints how many of them resolve exactly.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nixlet_manifest::{resolve_loaded, EnvRef, LoadedEnvironment, ResolvedEnv};
use serde_json::Value;

const SYSTEMS: [&str; 2] = ["x86_64-linux", "aarch64-linux"];

/// What Flox's builder installs on `system` from the lock `lock`, as store paths.
fn flox_installs(lock: &Value, system: &str) -> BTreeSet<String> {
    let manifest = &lock["manifest"];
    let mut paths = BTreeSet::new();
    for package in lock["packages"].as_array().into_iter().flatten() {
        if package["system"] != system {
            continue;
        }
        if let Some(path) = package["store_path"].as_str() {
            paths.insert(path.to_string());
            continue;
        }
        let Some(outputs) = package["outputs"].as_object() else {
            continue;
        };
        let descriptor = &manifest["install"][package["install_id"].as_str().unwrap()];
        let to_install = package
            .get("outputs_to_install")
            .filter(|v| !v.is_null())
            .or_else(|| package.get("outputs-to-install"))
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        let names: Vec<&str> = if manifest.get("version").is_some() {
            outputs
                .keys()
                .map(String::as_str)
                .filter(|n| *n != "stubs")
                .collect()
        } else {
            match &descriptor["outputs"] {
                Value::String(all) if all == "all" => outputs.keys().map(String::as_str).collect(),
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                _ => to_install,
            }
        };
        for name in names {
            paths.insert(outputs[name].as_str().unwrap().to_string());
        }
    }
    paths
}

enum Outcome {
    Exact {
        system: &'static str,
        paths: usize,
        warnings: Vec<String>,
    },
    Differs {
        system: &'static str,
        detail: String,
    },
    Refused {
        system: &'static str,
        message: String,
    },
}

fn resolve_dir(dir: &Path, system: &'static str) -> Outcome {
    let lock_bytes = fs::read(dir.join("manifest.lock")).unwrap();
    let manifest_toml = fs::read_to_string(dir.join("manifest.toml")).unwrap();
    let loaded = LoadedEnvironment {
        reference: EnvRef::parse("corpus/env").unwrap(),
        generation: 1,
        location: dir.display().to_string(),
        manifest_toml,
        manifest_lock: Some(lock_bytes.clone()),
    };
    match resolve_loaded(loaded, system) {
        Err(error) => Outcome::Refused {
            system,
            message: error.to_string(),
        },
        Ok(env) => {
            let lock: Value = serde_json::from_slice(&lock_bytes).unwrap();
            let expected = flox_installs(&lock, system);
            let got: BTreeSet<String> = env.store_paths().iter().map(|p| p.to_string()).collect();
            if let Some(detail) = activation_differs(&lock, &env) {
                return Outcome::Differs { system, detail };
            }
            if got == expected {
                Outcome::Exact {
                    system,
                    paths: got.len(),
                    warnings: env.warnings,
                }
            } else {
                Outcome::Differs {
                    system,
                    detail: format!(
                        "nixlet only: {:?}; flox only: {:?}",
                        got.difference(&expected).collect::<Vec<_>>(),
                        expected.difference(&got).collect::<Vec<_>>()
                    ),
                }
            }
        }
    }
}

/// What the container is activated with, if it is not what the lock's manifest (for
/// `[include]`, the merged one) gives Flox's activation: the variable names, the on-activate
/// hook as written, and the activation mode.
fn activation_differs(lock: &Value, env: &ResolvedEnv) -> Option<String> {
    let manifest = &lock["manifest"];
    let flox_vars: BTreeSet<&str> = manifest["vars"]
        .as_object()
        .map(|vars| vars.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let vars: BTreeSet<&str> = env.vars.iter().map(|(name, _)| name.as_str()).collect();
    if vars != flox_vars {
        return Some(format!("variables {vars:?}, flox sets {flox_vars:?}"));
    }
    let flox_hook = manifest["hook"]["on-activate"].as_str();
    if env.hook_on_activate.as_deref() != flox_hook {
        return Some(format!(
            "on-activate hook {:?}, flox runs {flox_hook:?}",
            env.hook_on_activate
        ));
    }
    let flox_mode = manifest["options"]["activate"]["mode"].as_str();
    let mode = env.activate_mode.map(|mode| mode.to_string());
    if mode.as_deref() != flox_mode {
        return Some(format!("activation mode {mode:?}, flox uses {flox_mode:?}"));
    }
    None
}

/// Whether Flox would build the environment of `lock` for `system` at all: the lock's manifest
/// lists the systems it supports in `options.systems` (absent means every system), and
/// `flox activate` on another system fails before anything is installed.
fn flox_supports(lock: &Value, system: &str) -> bool {
    match lock["manifest"]["options"]["systems"].as_array() {
        None => true,
        Some(systems) => systems.iter().any(|s| s == system),
    }
}

/// The environment directories below `root`, sorted.
fn environments(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("manifest.lock").is_file() && path.join("manifest.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn every_committed_environment_resolves_to_exactly_what_flox_installs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let dirs = environments(&root);
    assert!(
        dirs.len() >= 33,
        "the corpus has {} environments",
        dirs.len()
    );
    let mut compared = 0;
    let mut unsupported = 0;
    for dir in &dirs {
        assert!(
            dir.join("SOURCE").is_file(),
            "{} says where it is from",
            dir.display()
        );
        let expected_error = fs::read_to_string(dir.join("EXPECT_ERROR")).ok();
        let lock: Value =
            serde_json::from_slice(&fs::read(dir.join("manifest.lock")).unwrap()).unwrap();
        for system in SYSTEMS {
            if expected_error.is_none() && !flox_supports(&lock, system) {
                // An environment locked for other systems only: refused, naming the system.
                match resolve_dir(dir, system) {
                    Outcome::Refused { message, .. } => assert!(
                        message.contains("the environment supports systems")
                            && message.ends_with(&format!("not {system:?}")),
                        "{} on {system}: {message}",
                        dir.display()
                    ),
                    _ => panic!(
                        "{} resolved on {system}, which it does not support",
                        dir.display()
                    ),
                }
                unsupported += 1;
                continue;
            }
            match (resolve_dir(dir, system), &expected_error) {
                (Outcome::Refused { message, .. }, Some(expected)) => {
                    let expected = expected
                        .trim_end()
                        .replace("{dir}", &dir.display().to_string());
                    assert_eq!(message, expected, "{}", dir.display());
                }
                (
                    Outcome::Exact {
                        paths, warnings, ..
                    },
                    None,
                ) => {
                    assert!(warnings.is_empty(), "{}: {warnings:?}", dir.display());
                    compared += paths;
                }
                (Outcome::Differs { detail, .. }, _) => {
                    panic!("{} on {system}: {detail}", dir.display())
                }
                (Outcome::Refused { message, .. }, None) => {
                    panic!("{} on {system} was refused: {message}", dir.display())
                }
                (Outcome::Exact { .. }, Some(_)) => {
                    panic!(
                        "{} on {system} resolved, but should be refused",
                        dir.display()
                    )
                }
            }
        }
    }
    // Not a corpus of empty environments: real store paths were compared.
    assert!(compared >= 480, "only {compared} store paths compared");
    // Environments locked for x86_64-linux only are in the corpus, and were refused on aarch64.
    assert!(
        unsupported >= 2,
        "only {unsupported} environments refused for their system"
    );
}

/// Prints one line per environment and system, and the totals; fails only if nothing was read.
#[test]
#[ignore = "needs NIXLET_FLOX_CORPUS_DIR: a directory of environments to measure"]
fn measure_external_corpus() {
    let root = PathBuf::from(std::env::var("NIXLET_FLOX_CORPUS_DIR").unwrap());
    let dirs = environments(&root);
    assert!(!dirs.is_empty(), "no environments in {}", root.display());
    let (mut exact, mut differs, mut refused) = (0, 0, 0);
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy();
        for system in SYSTEMS {
            match resolve_dir(dir, system) {
                Outcome::Exact {
                    system,
                    paths,
                    warnings,
                } => {
                    exact += 1;
                    println!("{name} {system}: exact ({paths} paths) {warnings:?}");
                }
                Outcome::Differs { system, detail } => {
                    differs += 1;
                    println!("{name} {system}: DIFFERS {detail}");
                }
                Outcome::Refused { system, message } => {
                    refused += 1;
                    println!("{name} {system}: refused: {message}");
                }
            }
        }
    }
    println!(
        "environments {}; (environment, system) pairs: exact {exact}, differs {differs}, \
         refused {refused}",
        dirs.len()
    );
}
