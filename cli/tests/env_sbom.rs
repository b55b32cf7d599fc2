//! `nixlet env sbom`, run as a process on a real closure built with `nix-build`: it prints a
//! valid CycloneDX 1.5 document of exactly the closure, the same bytes every time and with
//! `--output`, and refuses with one readable line when the closure is not on the node.

#[path = "../../store/tests/support/mod.rs"]
mod nix_support;

#[path = "../../store/tests/support/cyclonedx_schema.rs"]
mod cyclonedx_schema;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix_support::nix_fixture::{unique_tag, Closure};
use nix_support::prereq;
use serde_json::Value;

struct Node {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[[sources]]\nkind = \"dir\"\nroot = \"{}\"\n",
                dir.path().join("envs").display()
            ),
        )
        .unwrap();
        Node { dir, config }
    }

    /// Generation 1 of `acme/<name>` with one store-path package.
    fn publish(&self, name: &str, store_path: &str) {
        let generation = self.dir.path().join("envs/acme").join(name).join("1");
        std::fs::create_dir_all(&generation).unwrap();
        std::fs::write(
            generation.join("manifest.toml"),
            format!("version = 1\n[install]\ntop.store-path = \"{store_path}\"\n"),
        )
        .unwrap();
    }

    fn nixlet(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_nixlet"))
            .args(args)
            .env("NIXLET_CONFIG", &self.config)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "nixlet {args:?}: {}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

#[test]
fn env_sbom_prints_the_closure_as_cyclonedx() {
    if !prereq::ready("env_sbom_prints_the_closure_as_cyclonedx") {
        return;
    }
    let closure = Closure::build(&unique_tag("clisbom"));
    let node = Node::new();
    node.publish("tools", &closure.root);

    let output = node.nixlet(&["env", "sbom", "acme/tools"]);
    assert!(output.status.success());
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    cyclonedx_schema::assert_valid(&doc);
    let refs: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, closure.paths);
    assert_eq!(doc["metadata"]["component"]["bom-ref"], "acme/tools:1");

    // The same bytes again, for the exact generation, and into a file.
    let file = node.dir.path().join("sbom.cdx.json");
    let again = node.nixlet(&[
        "env",
        "sbom",
        "acme/tools:1",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(again.status.success());
    assert!(again.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), output.stdout);
}

#[test]
fn env_sbom_of_a_closure_not_on_the_node_says_how_to_get_it() {
    let node = Node::new();
    let absent = "/nix/store/00000000000000000000000000000000-nixlet-absent-1.0";
    node.publish("absent", absent);
    if !Path::new(nixlet_store::DEFAULT_NIX_DB).exists() {
        let why = "no Nix database on this machine (run scripts/install-deps.sh)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("env_sbom_of_a_closure_not_on_the_node_says_how_to_get_it: skipping: {why}");
        return;
    }
    let output = node.nixlet(&["env", "sbom", "acme/absent"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "nixlet: sbom of acme/absent:1: store path {absent} is not on this node (not \
             registered in the Nix database); `nixlet env fetch acme/absent` fetches the closure \
             onto this node\n"
        )
    );
}
