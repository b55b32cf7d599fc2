//! What the real containerd makes of the configs install writes: `containerd --config FILE
//! config dump` prints the merged config (imports included) without a daemon. For every schema 2
//! fixture, the merged config after install must be the merged config before install plus the
//! `nixlet` runtime and nothing else; this is what catches an edit in a file whose CRI table
//! containerd 1.x does not use. Schema 3 needs containerd 2.x, which Debian 12 does not ship.
//!
//! Skipped with a message when `containerd` is not installed, except under `CI=true`.

mod support;

use std::path::Path;
use std::process::Command;

use support::Node;

const CRI: &str = "io.containerd.grpc.v1.cri";

fn containerd_available() -> bool {
    let found = Command::new("containerd").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "containerd is not installed (scripts/install-deps.sh installs it); CI=true makes this a failure"
        );
        eprintln!("skipped: containerd is not installed (scripts/install-deps.sh installs it)");
    }
    found
}

/// The merged config containerd would run with; `None` config means no file (the defaults).
fn dump(config: Option<&Path>) -> toml::Table {
    let mut command = Command::new("containerd");
    match config {
        Some(config) => command.arg("--config").arg(config).args(["config", "dump"]),
        None => command.args(["config", "default"]),
    };
    let output = command.output().expect("run containerd");
    assert!(
        output.status.success(),
        "containerd config dump of {config:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut dumped: toml::Table = String::from_utf8(output.stdout)
        .unwrap()
        .parse()
        .expect("containerd prints TOML");
    // The list of files read, which names the temporary directory.
    dumped.remove("imports");
    drop_zero_runtime_options(&mut dumped);
    dumped
}

/// containerd's built-in `runc` carries every runc option at its zero value, the `runc` install
/// writes for a file without runtimes carries none; the runc shim reads an absent option as its
/// zero value (protobuf), so the two mean the same and are compared without zero options.
fn drop_zero_runtime_options(config: &mut toml::Table) {
    for (_, runtime) in runtimes(config).iter_mut() {
        if let Some(options) = runtime
            .get_mut("options")
            .and_then(toml::Value::as_table_mut)
        {
            options.retain(|_, value| match value {
                toml::Value::String(text) => !text.is_empty(),
                toml::Value::Integer(number) => number != &0,
                toml::Value::Boolean(flag) => flag == &true,
                _ => true,
            });
        }
    }
}

fn runtimes(config: &mut toml::Table) -> &mut toml::Table {
    config["plugins"][CRI]["containerd"]["runtimes"]
        .as_table_mut()
        .expect("CRI runtimes table")
}

fn check(case: &str) {
    if !containerd_available() {
        return;
    }
    let node = Node::from_fixture(case);
    let config = node.path("/etc/containerd/config.toml");
    let before = dump(config.exists().then_some(config.as_path()));
    node.install();
    let mut after = dump(Some(&config));

    let nixlet = runtimes(&mut after)
        .remove("nixlet")
        .unwrap_or_else(|| panic!("{case}: containerd does not see the nixlet runtime"));
    let patterns = toml::Value::from(vec!["nixlet.dev/*", "flox.dev/*"]);
    assert_eq!(
        nixlet["runtime_type"].as_str(),
        Some("io.containerd.nixlet.v2"),
        "{case}"
    );
    assert_eq!(nixlet["pod_annotations"], patterns, "{case}");
    assert_eq!(nixlet["container_annotations"], patterns, "{case}");
    assert_eq!(
        after, before,
        "{case}: install changed more than the nixlet runtime"
    );
}

#[test]
fn debian_default() {
    check("v2-debian");
}

#[test]
fn nvidia_runtime_and_comments() {
    check("v2-nvidia-comments");
}

#[test]
fn cri_table_set_by_an_import() {
    check("v2-imports-cri-in-drop-in");
}

#[test]
fn imports_that_leave_cri_alone() {
    check("v2-imports-no-cri");
}

#[test]
fn empty_file() {
    check("empty");
}

#[test]
fn comments_only_file() {
    check("comments-only");
}

#[test]
fn missing_file() {
    check("missing");
}

/// Why schema 2 is not given a drop-in: containerd 1.x lets an imported file's CRI table
/// replace the main file's whole CRI table, so a drop-in declaring only the runtime would reset
/// the nvidia runtime and the sandbox image to defaults.
#[test]
fn a_schema_2_drop_in_would_replace_the_whole_cri_table() {
    if !containerd_available() {
        return;
    }
    let node = Node::from_fixture("v2-nvidia-comments");
    let config = node.path("/etc/containerd/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "version = 2\n",
            "version = 2\nimports = [\"nixlet.toml\"]\n",
        ),
    )
    .unwrap();
    std::fs::write(
        node.path("/etc/containerd/nixlet.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nixlet]\n  runtime_type = \"io.containerd.nixlet.v2\"\n",
    )
    .unwrap();
    let mut merged = dump(Some(&config));
    assert!(runtimes(&mut merged).contains_key("nixlet"));
    assert!(
        !runtimes(&mut merged).contains_key("nvidia"),
        "containerd now merges imported plugin tables: a schema 2 drop-in may be safe"
    );
    assert_ne!(
        merged["plugins"][CRI]["sandbox_image"].as_str(),
        Some("registry.k8s.io/pause:3.9")
    );
}
