//! The bill of materials of a real closure built by `nix-build`: valid CycloneDX 1.5, one
//! component per path with Nix's own NAR hash and size, names as `builtins.parseDrvName` splits
//! them, and exactly the dependency graph `nix-store -q --graph` draws.

mod support;

#[path = "support/cyclonedx_schema.rs"]
mod cyclonedx_schema;

use std::collections::{BTreeMap, BTreeSet};

use nixlet_manifest::{DirSource, EnvRef, EnvironmentSource};
use nixlet_store::environment_sbom::environment_sbom;
use nixlet_store::DEFAULT_NIX_DB;
use serde_json::Value;
use support::nix_fixture::{nix, unique_tag, Closure};
use support::prereq;

/// A `dir` source holding `acme/sbom` generation 1 whose only package is the closure's root.
fn environment_for(root: &str) -> (tempfile::TempDir, nixlet_manifest::ResolvedEnv) {
    let dir = tempfile::tempdir().unwrap();
    let generation = dir.path().join("acme/sbom/1");
    std::fs::create_dir_all(&generation).unwrap();
    std::fs::write(
        generation.join("manifest.toml"),
        format!("version = 1\n[install]\ntop.store-path = \"{root}\"\n"),
    )
    .unwrap();
    let sources: Vec<Box<dyn EnvironmentSource>> = vec![Box::new(DirSource::new(dir.path()))];
    let reference = EnvRef::parse("acme/sbom").unwrap();
    let system = format!("{}-linux", std::env::consts::ARCH);
    let env = nixlet_manifest::resolve(&sources, &reference, &system).unwrap();
    (dir, env)
}

/// `(referrer, reference)` pairs of `nix-store -q --graph ROOT`, full paths. Nix draws each
/// edge from the reference to the referrer and leaves self-references out.
fn nix_graph_edges(root: &str) -> BTreeSet<(String, String)> {
    let dot = nix(&["nix-store", "-q", "--graph", root]);
    dot.lines()
        .filter(|line| line.contains("->"))
        .map(|line| {
            let quoted: Vec<&str> = line.split('"').collect();
            let (reference, referrer) = (quoted[1], quoted[3]);
            (
                format!("/nix/store/{referrer}"),
                format!("/nix/store/{reference}"),
            )
        })
        .collect()
}

/// `builtins.parseDrvName` of each name, evaluated by Nix itself.
fn nix_parse_drv_names(names: &[String]) -> Vec<(String, String)> {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let expr = format!("map builtins.parseDrvName [ {} ]", list.join(" "));
    let json = nix(&[
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        "-E",
        &expr,
    ]);
    let parsed: Value = serde_json::from_str(&json).unwrap();
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn property<'a>(component: &'a Value, name: &str) -> &'a str {
    component["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no property {name} in {component}"))["value"]
        .as_str()
        .unwrap()
}

#[test]
fn sbom_of_a_real_closure_matches_what_nix_says() {
    if !prereq::ready("sbom_of_a_real_closure_matches_what_nix_says") {
        return;
    }
    let closure = Closure::build(&unique_tag("sbom"));
    let (_sources, env) = environment_for(&closure.root);
    let bytes = environment_sbom(&env, DEFAULT_NIX_DB.as_ref()).unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    cyclonedx_schema::assert_valid(&doc);

    // One component per closure path, named by its store path.
    let components = doc["components"].as_array().unwrap();
    let refs: Vec<&str> = components
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, closure.paths, "components in store path order");

    // NAR hash and size as Nix registered them.
    for component in components {
        let path = component["bom-ref"].as_str().unwrap();
        assert_eq!(property(component, "nix:store_path"), path);
        assert_eq!(
            component["hashes"][0]["content"], closure.dump_hashes[path],
            "NAR sha256 of {path}"
        );
        assert_eq!(
            property(component, "nix:nar_hash"),
            nix(&["nix-store", "-q", "--hash", path]).trim()
        );
        assert_eq!(
            property(component, "nix:nar_size"),
            nix(&["nix-store", "-q", "--size", path]).trim()
        );
    }

    // Names and versions exactly as Nix parses them.
    let names: Vec<String> = closure
        .paths
        .iter()
        .map(|p| p["/nix/store/".len() + 33..].to_string())
        .collect();
    let expected = nix_parse_drv_names(&names);
    for (component, (name, version)) in components.iter().zip(&expected) {
        assert_eq!(component["name"], name.as_str());
        assert_eq!(component["version"].as_str().unwrap_or(""), version);
    }

    // Programs make an application: `app` has bin/, `link` is a link to an executable.
    let kinds: BTreeMap<String, &str> = components
        .iter()
        .map(|c| {
            let path = c["bom-ref"].as_str().unwrap();
            let suffix = path.rsplit('-').next().unwrap().to_string();
            (suffix, c["type"].as_str().unwrap())
        })
        .collect();
    assert_eq!(kinds["app"], "application");
    assert_eq!(kinds["link"], "application");
    assert_eq!(kinds["lib"], "library");
    assert_eq!(kinds["top"], "library");

    // The dependency graph is nix-store's, plus the environment depending on its root.
    let mut edges = BTreeSet::new();
    let mut environment_deps = Vec::new();
    for dependency in doc["dependencies"].as_array().unwrap() {
        let from = dependency["ref"].as_str().unwrap();
        let to: Vec<String> = dependency["dependsOn"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if from == "acme/sbom:1" {
            environment_deps = to;
        } else {
            edges.extend(to.into_iter().map(|to| (from.to_string(), to)));
        }
    }
    assert_eq!(
        edges.len(),
        5,
        "top→file, top→link, link→app, app→lib, file→lib"
    );
    assert_eq!(edges, nix_graph_edges(&closure.root));
    assert_eq!(environment_deps, vec![closure.root.clone()]);
    assert_eq!(doc["metadata"]["component"]["bom-ref"], "acme/sbom:1");

    // Computing it again gives the same bytes: the view's path depends on them.
    assert_eq!(
        environment_sbom(&env, DEFAULT_NIX_DB.as_ref()).unwrap(),
        bytes
    );
}
