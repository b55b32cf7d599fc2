//! `nixlet node install` / `uninstall` over fixture nodes: the exact containerd config text
//! install writes for the containerd release that reads it, the node config with the runc
//! options it copies, idempotency (a second run is byte-identical, reports no change and does
//! not restart containerd), and uninstall bringing back every original byte, mode and directory.
//!
//! Each `tests/fixtures/containerd/<case>/before` is a node's file system; `after` (or the
//! directory a case names, when the result depends on the release) holds the containerd config
//! files install must write, exactly, and `etc/nixlet/config.toml` when the node config is not
//! the defaults. Every other file must be untouched, and every replaced file must have a
//! `.nixlet-backup` with its original bytes. The release is given as `--containerd-version`
//! gives it; `containerd_dump.rs` and the tests at the end ask real containerd binaries. The
//! `after-2.1` directories hold what containerd 2.0 to 2.3 get: nixlet's shim declared as a runc
//! runtime at its path (`runtime_form.rs` says why).
//! `NIXLET_BLESS=1 cargo test -p nixlet-cli --test node_install` rewrites the expected files from
//! what install wrote, for review in the diff.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nixlet_installer::{node_config_file, RestartOutcome, RunningContainerd};
use support::{containerd_daemon, fixtures, text_files, Entry, Node, CLI_BYTES, SHIM_BYTES};

macro_rules! fixture_cases {
    ($($name:ident => ($case:literal, $containerd:literal, $after:literal),)*) => {$(
        #[test]
        fn $name() {
            check_case($case, $containerd, $after);
        }
    )*};
}

fixture_cases! {
    schema_2_debian_default_on_1_6 => ("v2-debian", "1.6.20", "after"),
    schema_2_debian_default_on_2_1 => ("v2-debian", "2.1.9", "after-2.1"),
    schema_2_debian_default_on_2_4 => ("v2-debian", "v2.4.0-beta.0", "after-2.x"),
    schema_2_with_nvidia_and_comments_on_1_7 => ("v2-nvidia-comments", "1.7.24", "after"),
    schema_2_with_nvidia_and_comments_on_2_1 => ("v2-nvidia-comments", "2.1.9", "after-2.1"),
    schema_2_with_cri_set_in_an_import_on_1_6 => ("v2-imports-cri-in-drop-in", "1.6.20", "after"),
    schema_2_with_cri_set_in_an_import_on_2_1 => ("v2-imports-cri-in-drop-in", "2.1.9", "after-2.1"),
    schema_2_with_imports_that_leave_cri_alone => ("v2-imports-no-cri", "1.6.20", "after"),
    schema_3_without_imports_on_2_1 => ("v3-plain", "2.1.9", "after-2.1"),
    schema_3_without_imports_on_2_4 => ("v3-plain", "v2.4.0-beta.0", "after"),
    schema_3_with_a_covering_imports_glob_on_2_1 => ("v3-imports-glob", "2.1.9", "after-2.1"),
    schema_3_with_a_covering_imports_glob_on_2_4 => ("v3-imports-glob", "v2.4.0-beta.0", "after"),
    schema_3_with_nvidia_comments_and_other_imports_on_2_1 => ("v3-nvidia-comments", "2.1.9", "after-2.1"),
    schema_3_with_nvidia_comments_and_other_imports_on_2_4 => ("v3-nvidia-comments", "v2.4.0-beta.0", "after"),
    schema_4_on_2_4 => ("v4-plain", "v2.4.0-beta.0", "after"),
    empty_file_on_1_6 => ("empty", "1.6.20", "after"),
    empty_file_on_2_1 => ("empty", "2.1.9", "after-2.1"),
    empty_file_on_2_4 => ("empty", "v2.4.0-beta.0", "after-2.x"),
    comments_only_file_on_1_6 => ("comments-only", "1.6.20", "after"),
    comments_only_file_on_2_1 => ("comments-only", "2.1.9", "after-2.1"),
    comments_only_file_on_2_4 => ("comments-only", "v2.4.0-beta.0", "after-2.x"),
    missing_file_on_1_6 => ("missing", "1.6.20", "after"),
    missing_file_on_2_1 => ("missing", "2.1.9", "after-2.1"),
    missing_file_on_2_4 => ("missing", "v2.4.0-beta.0", "after-2.x"),
}

fn check_case(case: &str, containerd: &str, after: &str) {
    let node = Node::from_fixture_on(case, containerd);
    let pristine = node.snapshot();

    let first = node.install();
    assert!(
        first.changed(),
        "{case}: first run changed nothing:\n{first}"
    );
    assert_eq!(first.restart, RestartOutcome::Restarted, "{case}:\n{first}");
    assert_eq!(node.restarts(), 1, "{case}");
    assert!(
        first
            .to_string()
            .starts_with(&format!("containerd {containerd} (as given): ")),
        "{first}"
    );
    let installed = node.snapshot();
    if std::env::var_os("NIXLET_BLESS").is_some() {
        bless(case, after, &pristine, &installed);
    }
    assert_eq!(
        text_files(&installed, "etc/containerd"),
        expected_containerd_files(case, after, &pristine),
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
        expected_node_config(case, after),
        "{case}: node config:\n{first}"
    );
    node_config_file::validate(
        &node.read("/etc/nixlet/config.toml"),
        Path::new("/etc/nixlet/config.toml"),
    )
    .unwrap();
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

fn expected_node_config(case: &str, after: &str) -> String {
    let path = fixtures()
        .join(case)
        .join(after)
        .join("etc/nixlet/config.toml");
    fs::read_to_string(path).unwrap_or_else(|_| node_config_file::default_text())
}

/// The node's containerd files as install must leave them: `after` files replace their
/// originals, each replaced original is kept as a backup, everything else as it was.
fn expected_containerd_files(
    case: &str,
    after: &str,
    pristine: &support::Snapshot,
) -> BTreeMap<PathBuf, String> {
    let mut expected = text_files(pristine, "etc/containerd");
    let after = fixtures().join(case).join(after);
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

fn bless(case: &str, after: &str, pristine: &support::Snapshot, installed: &support::Snapshot) {
    let after = fixtures().join(case).join(after);
    let _ = fs::remove_dir_all(&after);
    let mut written = text_files(installed, "etc/containerd");
    let node_config = text_files(installed, "etc/nixlet/config.toml");
    for (path, text) in node_config {
        if text != node_config_file::default_text() {
            written.insert(path, text);
        }
    }
    for (path, text) in written {
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
    let node = Node::from_fixture_on("v3-plain", "2.1.9");
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
    let node = Node::from_fixture_on("v3-plain", "2.1.9");
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

#[test]
fn a_schema_the_running_containerd_cannot_read_is_refused_before_anything_is_written() {
    let node = Node::from_fixture_on("v3-plain", "1.7.24");
    let pristine = node.snapshot();
    let error = nixlet_installer::install(&node.options(), Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "containerd config /etc/containerd/config.toml declares `version = 3`, which the \
             running containerd 1.7.24 cannot read (it reads up to version 2; version 3 needs \
             containerd 2.0 or later)"
        ),
        "{error}"
    );
    assert_eq!(node.snapshot(), pristine);
    assert_eq!(node.restarts(), 0);
}

#[test]
fn a_containerd_older_than_1_6_is_refused_before_anything_is_written() {
    let node = Node::from_fixture_on("v2-debian", "1.5.18");
    let pristine = node.snapshot();
    let error = nixlet_installer::install(&node.options(), Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "containerd 1.5.18 is not supported: nixlet supports containerd 1.6 and later"
    );
    assert_eq!(node.snapshot(), pristine);
}

/// The configmap's own runtime settings win; the node's cgroup driver joins them.
#[test]
fn runc_options_join_the_configmaps_node_config() {
    let node = Node::from_fixture_on("v2-nvidia-comments", "2.1.9");
    let pristine = node.snapshot();
    let configmap = node.source.path().join("config.toml");
    fs::write(&configmap, "[runtime]\nbinary_name = \"crun\"\n").unwrap();
    let options = nixlet_installer::InstallOptions {
        node_config: Some(configmap.clone()),
        ..node.options()
    };
    let report = node.install_with(&options).to_string();
    let written = node.read("/etc/nixlet/config.toml");
    assert!(
        written.starts_with("[runtime]\nbinary_name = \"crun\"\n\n# Copied by `nixlet node install` from containerd's runc handler `runc`")
            && written.ends_with("[runtime.runc_options]\nSystemdCgroup = true\n"),
        "{written}"
    );
    assert!(
        report.contains(&format!(
            "changed   /etc/nixlet/config.toml: installed from {}, with SystemdCgroup = true from containerd's runc handler `runc`",
            configmap.display()
        )),
        "{report}"
    );
    assert!(!node.install_with(&options).changed());
    node.uninstall();
    assert_eq!(node.snapshot(), pristine);
}

/// The node's own config (no ConfigMap) gets the options too, and a later run follows a change
/// of containerd's instead of keeping what it copied before.
#[test]
fn a_later_run_follows_containerds_runc_options() {
    let node = Node::from_fixture_on("v2-nvidia-comments", "1.6.20");
    fs::create_dir_all(node.path("/etc/nixlet")).unwrap();
    let own = "system = \"x86_64-linux\"\n";
    fs::write(node.path("/etc/nixlet/config.toml"), own).unwrap();
    node.install();
    assert!(
        node.read("/etc/nixlet/config.toml")
            .starts_with(&format!("{own}\n# Copied by")),
        "{}",
        node.read("/etc/nixlet/config.toml")
    );
    assert!(node
        .read("/etc/nixlet/config.toml")
        .contains("SystemdCgroup = true\n"));

    // The operator moves the node to cgroupfs and installs again.
    let config = node.read("/etc/containerd/config.toml");
    fs::write(
        node.path("/etc/containerd/config.toml"),
        config.replace("SystemdCgroup = true", "SystemdCgroup = false"),
    )
    .unwrap();
    let report = node.install();
    assert_eq!(node.read("/etc/nixlet/config.toml"), own, "{report}");

    node.uninstall();
    assert_eq!(node.read("/etc/nixlet/config.toml"), own);
    assert!(!node.path("/etc/nixlet/config.toml.nixlet-backup").exists());
}

/// containerd 1.6 still has CriuPath; nixlet's node config does not carry it, and says so.
#[test]
fn runc_options_the_node_config_does_not_know_are_reported() {
    let node = Node::from_fixture_on("missing", "1.6.20");
    fs::create_dir_all(node.path("/etc/containerd")).unwrap();
    fs::write(
        node.path("/etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         CriuPath = \"/usr/sbin/criu\"\nNoPivotRoot = true\nBinaryName = \"\"\n",
    )
    .unwrap();
    let report = node.install().to_string();
    assert!(
        report.contains(
            "note      /etc/nixlet/config.toml: runc option left out: CriuPath = \"/usr/sbin/criu\" \
             of handler `runc`: nixlet's node config has no runc option CriuPath (containerd 2.0 \
             removed it; runc finds criu on its PATH)\n"
        ),
        "{report}"
    );
    let written = node.read("/etc/nixlet/config.toml");
    assert!(
        written.ends_with("[runtime.runc_options]\nNoPivotRoot = true\n"),
        "{written}"
    );
    // A note is not a change: the second run says nothing changed, and notes it again.
    let second = node.install().to_string();
    assert!(second.ends_with("nothing changed\n"), "{second}");
    assert!(
        second.contains("runc option left out: CriuPath"),
        "{second}"
    );
}

/// Without `--containerd-version`, install asks the daemon on the socket its config names (here
/// none, so containerd's default below the host root), and writes the schema that release reads.
#[test]
fn install_asks_the_running_containerd_which_schema_to_write() {
    if !containerd_daemon::available("install_asks_the_running_containerd_which_schema_to_write") {
        return;
    }
    let node = Node::from_fixture("missing");
    let daemon = containerd_daemon::Daemon::start(&node.path("/run/containerd/containerd.sock"));
    let options = nixlet_installer::InstallOptions {
        containerd: RunningContainerd::Ask { address: None },
        ..node.options()
    };
    let report = node.install_with(&options).to_string();
    eprintln!("containerd {}:\n{report}", daemon.version);
    assert!(
        report.starts_with(&format!(
            "containerd {} (answered at /run/containerd/containerd.sock): ",
            daemon.version
        )),
        "{report}"
    );
    let after = if daemon.version.asks_features_only_of_runc_type() {
        "after-2.1"
    } else if daemon.version.major >= 2 {
        "after-2.x"
    } else {
        "after"
    };
    let expected = fixtures()
        .join("missing")
        .join(after)
        .join("etc/containerd/config.toml");
    assert_eq!(
        node.read("/etc/containerd/config.toml"),
        fs::read_to_string(expected).unwrap(),
        "{report}"
    );
    drop(daemon);
    let _ = fs::remove_file(node.path("/run/containerd/containerd.sock"));

    // Nobody answers now: install stops before writing and says what to do.
    node.uninstall();
    let pristine = node.snapshot();
    let error = nixlet_installer::install(&options, Some(&node.restarter))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "ask containerd at {} for its version: ",
            node.path("/run/containerd/containerd.sock").display()
        )) && error.ends_with(
            "; start containerd, or name the socket with --containerd-address, or (on a node \
             whose containerd does not run) its release with --containerd-version"
        ),
        "{error}"
    );
    assert_eq!(node.snapshot(), pristine);
}

/// The node's own config that does not parse is left for the operator (doctor names the fault):
/// install has no better file to put there, and the rest of the install goes on.
#[test]
fn a_broken_node_config_of_the_node_is_kept_and_said_so() {
    let node = Node::from_fixture_on("v2-nvidia-comments", "1.7.24");
    fs::create_dir_all(node.path("/etc/nixlet")).unwrap();
    fs::write(node.path("/etc/nixlet/config.toml"), "[runtime\n").unwrap();
    let report = node.install().to_string();
    assert!(
        report.contains("kept      /etc/nixlet/config.toml: node config /etc/nixlet/config.toml: ")
            && report
                .contains(": the runc options of containerd's handler `runc` were not added\n"),
        "{report}"
    );
    assert_eq!(node.read("/etc/nixlet/config.toml"), "[runtime\n");
    assert!(node
        .read("/etc/containerd/config.toml")
        .contains("runtimes.nixlet]"));
}
