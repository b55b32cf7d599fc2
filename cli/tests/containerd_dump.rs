//! What the real containerd makes of the configs install writes: `containerd --config FILE
//! config dump` prints the merged config (imports included, older schemas migrated) without a
//! daemon. For every fixture the `containerd` on PATH reads, install is told that release, and
//! the merged config after install must be the merged config before install plus the `nixlet`
//! runtime and nothing else; this is what catches an edit in a file whose CRI table containerd
//! does not use. The runc options install copies into nixlet's node config must be the ones the
//! merged config gives the default runc handler.
//!
//! Run it once per release line: `cargo test -p nixlet-cli --test containerd_dump` uses Debian
//! 12's 1.6; put `/var/lib/nixlet-ci/containerd/<version>/usr/bin` first on PATH for 1.7 or 2.x.
//! Skipped with a message when `containerd` is not installed, except under `CI=true`.

mod support;

use std::path::Path;
use std::process::Command;

use nixlet_installer::ContainerdVersion;
use support::containerd_daemon;
use support::Node;

/// Fixtures whose `imports` name absolute paths under /etc/containerd: the real containerd
/// would read this machine's files there, not the fixture's.
const ABSOLUTE_IMPORTS: [&str; 1] = ["v3-imports-glob"];

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
    let version = containerd_daemon::path_version();
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
    // `config default` and `config dump` of a file agree on everything but the version line
    // when the file is older than the release (the dump shows the migrated version).
    dumped.remove("version");
    drop_zero_runtime_options(&mut dumped, &version);
    dumped
}

/// containerd's built-in `runc` carries every runc option at its zero value, the `runc` install
/// writes for a file without runtimes carries none; the runc shim reads an absent option as its
/// zero value (protobuf), so the two mean the same and are compared without zero options.
fn drop_zero_runtime_options(config: &mut toml::Table, version: &ContainerdVersion) {
    for (_, runtime) in runtimes(config, version).iter_mut() {
        // containerd 1.7's built-in runc says `sandbox_mode = "podsandbox"`, the `runc` install
        // writes for it says nothing, and 1.7 validates "" into "podsandbox"
        // (pkg/cri/config/config.go), so both mean the same.
        if let Some(runtime) = runtime.as_table_mut() {
            if runtime.get("sandbox_mode").is_some_and(|mode| {
                mode.as_str() == Some("") || mode.as_str() == Some("podsandbox")
            }) {
                runtime.remove("sandbox_mode");
            }
        }
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

/// The CRI runtimes of a dumped config: containerd 2.x prints every schema migrated to its own.
fn runtimes<'t>(config: &'t mut toml::Table, version: &ContainerdVersion) -> &'t mut toml::Table {
    cri_containerd(config, version)["runtimes"]
        .as_table_mut()
        .expect("CRI runtimes table")
}

fn cri_containerd<'t>(
    config: &'t mut toml::Table,
    version: &ContainerdVersion,
) -> &'t mut toml::Value {
    let plugin = if version.major >= 2 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    &mut config["plugins"][plugin]["containerd"]
}

fn check(case: &str) {
    if !containerd_available() {
        return;
    }
    let version = containerd_daemon::path_version();
    let node = Node::from_fixture_on(case, &version.text);
    let config = node.path("/etc/containerd/config.toml");
    if let Ok(text) = std::fs::read_to_string(&config) {
        let declared = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("version").and_then(toml::Value::as_integer));
        if declared.is_some_and(|v| v > version.newest_schema().version()) {
            eprintln!("{case}: skipped: containerd {version} cannot read version {declared:?}");
            return;
        }
    }
    eprintln!("{case} on containerd {version}");
    let before = dump(config.exists().then_some(config.as_path()));
    let report = node.install();
    let mut after = dump(Some(&config));

    let nixlet = runtimes(&mut after, &version)
        .remove("nixlet")
        .unwrap_or_else(|| panic!("{case}: containerd does not see the nixlet runtime:\n{report}"));
    let patterns = toml::Value::from(vec!["nixlet.dev/*", "flox.dev/*"]);
    // containerd 2.0-2.3 get nixlet's shim as a runc runtime at its path (runtime_form.rs).
    let (runtime_type, runtime_path) = if version.asks_features_only_of_runc_type() {
        (
            "io.containerd.runc.v2",
            Some("/usr/local/bin/containerd-shim-nixlet-v2"),
        )
    } else {
        ("io.containerd.nixlet.v2", None)
    };
    assert_eq!(
        nixlet["runtime_type"].as_str(),
        Some(runtime_type),
        "{case}"
    );
    assert_eq!(
        nixlet
            .get("runtime_path")
            .and_then(toml::Value::as_str)
            .filter(|p| !p.is_empty()),
        runtime_path,
        "{case}"
    );
    assert_eq!(nixlet["pod_annotations"], patterns, "{case}");
    assert_eq!(nixlet["container_annotations"], patterns, "{case}");
    assert_eq!(
        after, before,
        "{case}: install changed more than the nixlet runtime:\n{report}"
    );

    // The runc options nixlet's node config got are the default runc handler's, as containerd
    // merged them (zero options dropped above; they are the runc shim's defaults).
    let containerd = cri_containerd(&mut after, &version);
    let default = containerd["default_runtime_name"]
        .as_str()
        .unwrap()
        .to_string();
    let handler = &containerd["runtimes"][&default];
    let handler = if handler["runtime_type"].as_str() == Some("io.containerd.runc.v2") {
        handler
    } else {
        &containerd["runtimes"]["runc"]
    };
    let expected = handler
        .get("options")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let node_config: toml::Table = node.read("/etc/nixlet/config.toml").parse().unwrap();
    let copied = node_config
        .get("runtime")
        .and_then(|runtime| runtime.get("runc_options"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        copied, expected,
        "{case}: runc options in nixlet's node config"
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
fn schema_3() {
    check("v3-plain");
}

#[test]
fn schema_3_nvidia_default_and_other_imports() {
    check("v3-nvidia-comments");
}

#[test]
fn schema_4() {
    check("v4-plain");
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

#[test]
fn every_fixture_is_dumped_or_named_as_not_dumpable() {
    let dumped = [
        "v2-debian",
        "v2-nvidia-comments",
        "v2-imports-cri-in-drop-in",
        "v2-imports-no-cri",
        "v3-plain",
        "v3-nvidia-comments",
        "v4-plain",
        "empty",
        "comments-only",
        "missing",
    ];
    for entry in std::fs::read_dir(support::fixtures()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            dumped.contains(&name.as_str()) || ABSOLUTE_IMPORTS.contains(&name.as_str()),
            "fixture {name} has no containerd_dump test"
        );
    }
}

/// Why schema 2 is not given a drop-in while schema 3 is: containerd 1.x lets an imported
/// file's CRI table replace the main file's whole CRI table, so a drop-in declaring only the
/// runtime would reset the nvidia runtime and the sandbox image to defaults; 2.x merges it key
/// by key (the same file, migrated).
#[test]
fn an_imported_cri_table_replaces_the_whole_table_on_1_x_and_merges_on_2_x() {
    if !containerd_available() {
        return;
    }
    let version = containerd_daemon::path_version();
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
    assert!(runtimes(&mut merged, &version).contains_key("nixlet"));
    let kept = runtimes(&mut merged, &version).contains_key("nvidia");
    assert_eq!(
        kept,
        version.merges_plugin_tables(),
        "containerd {version} merges imported plugin tables: {kept}"
    );
}
