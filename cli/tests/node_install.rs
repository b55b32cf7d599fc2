//! `nixlet node install` / `uninstall` over fixture nodes: the exact containerd config text
//! install writes, idempotency (a second run is byte-identical, reports no change and does not
//! restart containerd), and uninstall bringing back every original byte, mode and directory.
//!
//! Each `tests/fixtures/containerd/<case>/before` is a node's file system; `after` holds the
//! containerd config files install must write, exactly. Every other file must be untouched, and
//! every replaced file must have a `.nixlet-backup` with its original bytes.
//! `NIXLET_BLESS=1 cargo test -p nixlet-cli --test node_install` rewrites the `after` files from
//! what install wrote, for review in the diff.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nixlet_installer::{node_config_file, RestartOutcome};
use support::{fixtures, text_files, Entry, Node, CLI_BYTES, SHIM_BYTES};

macro_rules! fixture_cases {
    ($($name:ident => $case:literal,)*) => {$(
        #[test]
        fn $name() {
            check_case($case);
        }
    )*};
}

fixture_cases! {
    schema_2_debian_default => "v2-debian",
    schema_2_with_nvidia_and_comments => "v2-nvidia-comments",
    schema_2_with_cri_set_in_an_import => "v2-imports-cri-in-drop-in",
    schema_2_with_imports_that_leave_cri_alone => "v2-imports-no-cri",
    schema_3_without_imports => "v3-plain",
    schema_3_with_a_covering_imports_glob => "v3-imports-glob",
    schema_3_with_nvidia_comments_and_other_imports => "v3-nvidia-comments",
    empty_file => "empty",
    comments_only_file => "comments-only",
    missing_file => "missing",
}

fn check_case(case: &str) {
    let node = Node::from_fixture(case);
    let pristine = node.snapshot();

    let first = node.install();
    assert!(
        first.changed(),
        "{case}: first run changed nothing:\n{first}"
    );
    assert_eq!(first.restart, RestartOutcome::Restarted, "{case}:\n{first}");
    assert_eq!(node.restarts(), 1, "{case}");
    let installed = node.snapshot();
    if std::env::var_os("NIXLET_BLESS").is_some() {
        bless(case, &pristine, &installed);
    }
    assert_eq!(
        text_files(&installed, "etc/containerd"),
        expected_containerd_files(case, &pristine),
        "{case}: containerd config files after install:\n{first}"
    );
    assert_eq!(
        installed[Path::new("usr/local/bin/containerd-shim-nixlet-v2")],
        Entry::File {
            mode: 0o755,
            bytes: SHIM_BYTES.to_vec()
        }
    );
    assert_eq!(
        installed[Path::new("usr/local/bin/nixlet")],
        Entry::File {
            mode: 0o755,
            bytes: CLI_BYTES.to_vec()
        }
    );
    assert_eq!(
        node.read("/etc/nixlet/config.toml"),
        node_config_file::default_text()
    );
    assert!(installed.contains_key(Path::new("var/lib/nixlet/environments")));
    assert!(installed.contains_key(Path::new("var/lib/nixlet/install-state.json")));

    let second = node.install();
    assert!(!second.changed(), "{case}: second run changed:\n{second}");
    assert!(
        second.to_string().ends_with("nothing changed\n"),
        "{second}"
    );
    assert_eq!(node.snapshot(), installed, "{case}: second run wrote");
    assert_eq!(
        node.restarts(),
        1,
        "{case}: second run restarted containerd"
    );

    let removed = node.uninstall();
    assert_eq!(
        removed.restart,
        RestartOutcome::Restarted,
        "{case}:\n{removed}"
    );
    assert_eq!(node.restarts(), 2, "{case}");
    assert_eq!(
        text_files(&node.snapshot(), ""),
        text_files(&pristine, ""),
        "{case}: files after uninstall:\n{removed}"
    );
    assert_eq!(
        node.snapshot(),
        pristine,
        "{case}: modes or directories after uninstall"
    );

    // A node can go through the cycle again: nothing is left over that would get in the way.
    node.install();
    assert_eq!(node.snapshot(), installed, "{case}: reinstall");
    node.uninstall();
    assert_eq!(node.snapshot(), pristine, "{case}: second uninstall");
}

/// The node's containerd files as install must leave them: `after` files replace their
/// originals, each replaced original is kept as a backup, everything else as it was.
fn expected_containerd_files(
    case: &str,
    pristine: &support::Snapshot,
) -> BTreeMap<PathBuf, String> {
    let mut expected = text_files(pristine, "etc/containerd");
    let after = fixtures().join(case).join("after");
    for (path, text) in text_files(&support::snapshot(&after), "etc/containerd") {
        if let Some(original) = expected.get(&path).cloned() {
            let mut backup = path.clone().into_os_string();
            backup.push(".nixlet-backup");
            expected.insert(PathBuf::from(backup), original);
        }
        expected.insert(path, text);
    }
    expected
}

fn bless(case: &str, pristine: &support::Snapshot, installed: &support::Snapshot) {
    let after = fixtures().join(case).join("after");
    let _ = fs::remove_dir_all(&after);
    for (path, text) in text_files(installed, "etc/containerd") {
        if path.to_string_lossy().ends_with(".nixlet-backup")
            || text_files(pristine, "etc/containerd").get(&path) == Some(&text)
        {
            continue;
        }
        let target = after.join(&path);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(target, text).unwrap();
    }
}

#[test]
fn uninstall_reverts_only_nixlets_edit_when_the_operator_changed_the_file_since() {
    let node = Node::from_fixture("v2-nvidia-comments");
    let original = node.read("/etc/containerd/config.toml");
    node.install();
    let config = node.path("/etc/containerd/config.toml");
    let edited = node
        .read("/etc/containerd/config.toml")
        .replace("/etc/containerd/certs.d", "/etc/containerd/registries.d");
    fs::write(&config, edited).unwrap();

    let report = node.uninstall().to_string();
    assert!(
        report.contains("reverted only nixlet's edits, kept the rest"),
        "{report}"
    );
    assert_eq!(
        node.read("/etc/containerd/config.toml"),
        original.replace("/etc/containerd/certs.d", "/etc/containerd/registries.d")
    );
    // The backup stays for the operator to compare with.
    assert_eq!(
        node.read("/etc/containerd/config.toml.nixlet-backup"),
        original
    );
}

#[test]
fn node_config_from_the_configmap_replaces_the_nodes_and_uninstall_restores_it() {
    let node = Node::from_fixture("v2-debian");
    fs::create_dir_all(node.path("/etc/nixlet")).unwrap();
    fs::write(
        node.path("/etc/nixlet/config.toml"),
        "system = \"x86_64-linux\"\n",
    )
    .unwrap();
    let pristine = node.snapshot();
    let configmap = node.source.path().join("config.toml");
    fs::write(&configmap, "[runtime]\nbinary_name = \"crun\"\n").unwrap();
    let options = nixlet_installer::InstallOptions {
        node_config: Some(configmap.clone()),
        ..node.options()
    };

    node.install_with(&options);
    assert_eq!(
        node.read("/etc/nixlet/config.toml"),
        "[runtime]\nbinary_name = \"crun\"\n"
    );
    assert_eq!(
        node.read("/etc/nixlet/config.toml.nixlet-backup"),
        "system = \"x86_64-linux\"\n"
    );
    let installed = node.snapshot();
    assert!(!node.install_with(&options).changed());
    assert_eq!(node.snapshot(), installed);

    node.uninstall();
    assert_eq!(node.snapshot(), pristine);
}

#[test]
fn invalid_input_is_refused_before_anything_is_written() {
    let node = Node::from_fixture("v2-debian");
    let pristine = node.snapshot();
    let configmap = node.source.path().join("config.toml");
    fs::write(&configmap, "[runtime]\nbinary_nam = \"crun\"\n").unwrap();
    let options = nixlet_installer::InstallOptions {
        node_config: Some(configmap),
        ..node.options()
    };
    let error = nixlet_installer::install(&options, Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `binary_nam`"), "{error}");
    assert_eq!(node.snapshot(), pristine);

    // containerd reads a file without `version` as schema 1, with other plugin names.
    fs::write(
        node.path("/etc/containerd/config.toml"),
        "[plugins.cri]\n  sandbox_image = \"pause:3.9\"\n",
    )
    .unwrap();
    let pristine = node.snapshot();
    let error = nixlet_installer::install(&node.options(), Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert!(error.contains("has no `version`"), "{error}");
    assert_eq!(node.snapshot(), pristine);
    assert_eq!(node.restarts(), 0);
}

#[test]
fn a_binary_install_replaced_comes_back_on_uninstall() {
    let node = Node::from_fixture("v3-plain");
    fs::write(node.path("/usr/local/bin/nixlet"), "an older nixlet").unwrap();
    let pristine = node.snapshot();
    node.install();
    assert_eq!(node.read("/usr/local/bin/nixlet").as_bytes(), CLI_BYTES);
    assert_eq!(
        node.read("/usr/local/bin/nixlet.nixlet-backup"),
        "an older nixlet"
    );
    node.uninstall();
    assert_eq!(node.snapshot(), pristine);
}

#[test]
fn an_upgrade_replaces_the_binaries_without_restarting_containerd() {
    let node = Node::from_fixture("v3-plain");
    let pristine = node.snapshot();
    node.install();
    fs::write(node.source.path().join("nixlet"), "nixlet, next version").unwrap();
    let upgrade = node.install();
    assert!(upgrade.changed());
    assert_eq!(upgrade.restart, RestartOutcome::NotNeeded, "{upgrade}");
    assert_eq!(node.restarts(), 1);
    assert_eq!(node.read("/usr/local/bin/nixlet"), "nixlet, next version");
    node.uninstall();
    assert_eq!(node.snapshot(), pristine);
}

#[test]
fn a_failed_restart_is_retried_by_the_next_run() {
    let node = Node::from_fixture("v2-debian");
    node.restarter.fail.set(true);
    let error = nixlet_installer::install(&node.options(), Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert_eq!(error, "restart command is empty");
    let written = node.snapshot();

    node.restarter.fail.set(false);
    let retry = node.install();
    assert_eq!(retry.restart, RestartOutcome::Restarted, "{retry}");
    assert_eq!(node.restarts(), 1);
    assert_eq!(
        text_files(&node.snapshot(), "etc"),
        text_files(&written, "etc")
    );

    let third = node.install();
    assert!(!third.changed(), "{third}");
    assert_eq!(node.restarts(), 1);
}

#[test]
fn without_restart_the_report_says_containerd_must_be_restarted() {
    let node = Node::from_fixture("v2-debian");
    let report = nixlet_installer::install(&node.options(), None).unwrap();
    assert_eq!(report.restart, RestartOutcome::Skipped);
    assert!(
        report.to_string().contains("restart containerd to load it"),
        "{report}"
    );
}

#[test]
fn uninstall_of_a_node_without_nixlet_changes_nothing() {
    let node = Node::from_fixture("v2-debian");
    let pristine = node.snapshot();
    let report = node.uninstall();
    assert!(!report.changed(), "{report}");
    assert!(report.to_string().contains("nixlet is not installed"));
    assert_eq!(node.snapshot(), pristine);
    assert_eq!(node.restarts(), 0);
}
