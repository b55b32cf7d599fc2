//! `nixlet node install|uninstall` as an operator runs it: the real binary, installing itself
//! and the shim found next to it, with a restart command that restarts nothing, told the
//! containerd release with `--containerd-version` or asking a real containerd.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use support::{containerd_daemon, Node};

/// A copy of the built `nixlet` with a stand-in shim beside it, as in the node image.
fn release_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let nixlet = dir.path().join("nixlet");
    fs::copy(env!("CARGO_BIN_EXE_nixlet"), &nixlet).unwrap();
    fs::write(
        dir.path().join("containerd-shim-nixlet-v2"),
        support::SHIM_BYTES,
    )
    .unwrap();
    (dir, nixlet)
}

fn nixlet(binary: &PathBuf, args: &[&str]) -> Output {
    // Tests run on threads of one process: while one test writes its copy of the binary,
    // another test's fork can inherit that write descriptor for the instant before its exec
    // closes it, and exec of the freshly written copy then fails with ETXTBSY. Transient by
    // nature, so retried.
    let mut tries = 0;
    loop {
        match Command::new(binary).args(args).output() {
            Err(error) if error.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.expect("run nixlet"),
        }
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "nixlet failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn install_twice_then_uninstall() {
    let node = Node::from_fixture("v2-debian");
    let pristine = node.snapshot();
    let (_release, binary) = release_dir();
    let root = node.root.path().to_str().unwrap();
    let install = [
        "node",
        "install",
        "--host-root",
        root,
        "--restart-command",
        "true",
        "--containerd-version",
        "1.6.20",
    ];

    let first = stdout(&nixlet(&binary, &install));
    assert!(
        first.contains("changed   /etc/containerd/config.toml: added the nixlet runtime"),
        "{first}"
    );
    assert!(first.contains("containerd: restarted"), "{first}");
    assert_eq!(
        fs::read(node.path("/usr/local/bin/nixlet")).unwrap(),
        fs::read(&binary).unwrap()
    );

    let second = stdout(&nixlet(&binary, &install));
    assert!(
        second.ends_with("containerd: config unchanged, not restarted\nnothing changed\n"),
        "{second}"
    );

    let removed = stdout(&nixlet(
        &binary,
        &[
            "node",
            "uninstall",
            "--host-root",
            root,
            "--restart-command",
            "true",
        ],
    ));
    assert!(removed.contains("restored the original"), "{removed}");
    assert_eq!(node.snapshot(), pristine);
}

#[test]
fn a_refused_config_fails_with_the_reason() {
    let node = Node::from_fixture("v2-debian");
    fs::write(
        node.path("/etc/containerd/config.toml"),
        "[plugins.cri]\n  sandbox_image = \"pause:3.9\"\n",
    )
    .unwrap();
    let pristine = node.snapshot();
    let (_release, binary) = release_dir();
    let output = nixlet(
        &binary,
        &[
            "node",
            "install",
            "--host-root",
            node.root.path().to_str().unwrap(),
            "--no-restart",
            "--containerd-version",
            "1.6.20",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nixlet node install"), "{stderr}");
    assert!(stderr.contains("has no `version`"), "{stderr}");
    assert_eq!(node.snapshot(), pristine);
}

#[test]
fn install_asks_the_containerd_at_the_address_given() {
    if !containerd_daemon::available("install_asks_the_containerd_at_the_address_given") {
        return;
    }
    let node = Node::from_fixture("missing");
    let daemon = containerd_daemon::Daemon::start(&node.path("/run/k3s/containerd.sock"));
    let (_release, binary) = release_dir();
    let report = stdout(&nixlet(
        &binary,
        &[
            "node",
            "install",
            "--host-root",
            node.root.path().to_str().unwrap(),
            "--no-restart",
            "--containerd-address",
            "/run/k3s/containerd.sock",
        ],
    ));
    assert!(
        report.starts_with(&format!(
            "containerd {} (answered at /run/k3s/containerd.sock): reads config schema up to {}",
            daemon.version,
            daemon.version.newest_schema().version()
        )),
        "{report}"
    );
    let schema = daemon.version.new_file_schema().version();
    assert!(
        node.read("/etc/containerd/config.toml")
            .contains(&format!("\nversion = {schema}\n")),
        "{}",
        node.read("/etc/containerd/config.toml")
    );
}

#[test]
fn a_containerd_version_that_does_not_parse_is_refused_by_name() {
    let node = Node::from_fixture("missing");
    let (_release, binary) = release_dir();
    let output = nixlet(
        &binary,
        &[
            "node",
            "install",
            "--host-root",
            node.root.path().to_str().unwrap(),
            "--containerd-version",
            "two",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("containerd version \"two\" does not start with MAJOR.MINOR"),
        "{stderr}"
    );
}
