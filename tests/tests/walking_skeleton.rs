//! The walking skeleton, end to end: a private containerd with the nixlet handler, real store
//! paths, and a CRI client playing the kubelet. Each test runs its own node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixlet_e2e::containerd_config::{NIXLET_HANDLER, RUNC_HANDLER};
use nixlet_e2e::cri::{ContainerSpec, Cri, Pod};
use nixlet_e2e::images::{BUSYBOX_IMAGE, EMPTY_IMAGE};
use nixlet_e2e::mounts;
use nixlet_e2e::nix_fixture::{expected_hello_output, Fixture};
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const FLOX_ENVIRONMENT: &str = "flox.dev/environment";
const SKIP_CONTAINERS: &str = "nixlet.dev/skip-containers";

/// The node config's default `[mounts] trees_dir`.
const TREES_DIR: &str = "/nix/var/nixlet/trees";

/// The tag of the main fixture, and what `hello` prints with it.
const TAG: &str = "walking-skeleton";

/// PATH of the empty image (see images.rs); a nixlet container's PATH ends with it.
const EMPTY_IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the fixture for `tag` and publishes it as generation 1 of `reference`, with the
/// `[vars]` every test expects.
fn publish_hello(node: &TestNode, reference: &str, tag: &str) -> Result<Fixture> {
    let fixture = node.fixture(tag)?;
    let text = manifest(
        &[("hello", &fixture.hello)],
        &[
            ("GREETING", "hello from nix"),
            ("MESSAGE", "${GREETING} and friends"),
            ("OVERRIDDEN", "from the manifest"),
        ],
    );
    node.publish(reference, 1, &text)?;
    Ok(fixture)
}

/// `NAME=value` lines as a map.
fn env_map(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `spec` to completion and insists on exit code 0; returns its stdout.
fn run_ok(cri: &Cri, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
    let (code, out) = cri.run_to_exit(pod, spec)?;
    ensure!(code == 0, "{} exited with {code}; stdout: {out}", spec.name);
    Ok(out)
}

/// PATH of a container in an environment: store directories first (hello's `bin`, or a merged
/// environment view's `bin` once nixlet builds one), then the image's own PATH unchanged.
fn assert_environment_path(path: &str) {
    let added = path
        .strip_suffix(&format!(":{EMPTY_IMAGE_PATH}"))
        .unwrap_or_else(|| panic!("PATH {path:?} does not end with the image's PATH"));
    assert!(
        added.split(':').all(|dir| dir.starts_with("/nix/store/")),
        "PATH {path:?} adds directories outside /nix/store"
    );
    assert!(
        added.split(':').any(|dir| dir.ends_with("/bin")),
        "PATH {path:?} adds no bin directory"
    );
}

/// A container that just runs `hello` from the environment's PATH.
fn hello_container(name: &str) -> ContainerSpec {
    ContainerSpec::new(name, EMPTY_IMAGE).command(&["hello"])
}

/// (a) A nixlet pod on the empty image: `hello` is found through PATH and its closure (data,
/// busybox) is mounted; `[vars]` are set and the pod's env wins; ExecSync sees the same PATH;
/// the store holds exactly the closure, through one read-only mount of the environment's tree.
#[test]
fn nixlet_pod_runs_an_environment_on_the_empty_image() {
    TestNode::run_test(
        "nixlet_pod_runs_an_environment_on_the_empty_image",
        |node| {
            let fixture = publish_hello(node, "acme/hello", TAG)?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("hello", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            check_hello_runs(cri, &pod)?;
            let path = check_vars(cri, &pod, &fixture)?;
            check_exec_and_read_only_store(cri, &pod, &fixture, &path)
        },
    );
}

/// `hello` runs from PATH, also with a read-only root filesystem.
fn check_hello_runs(cri: &Cri, pod: &Pod) -> Result<()> {
    let out = run_ok(cri, pod, &hello_container("hello"))?;
    assert_eq!(out, expected_hello_output(TAG));
    let ro = run_ok(cri, pod, &hello_container("hello-ro").readonly_rootfs())?;
    assert_eq!(ro, expected_hello_output(TAG), "read-only root filesystem");
    Ok(())
}

/// The environment's PATH and `[vars]` (expanded), with the pod's own env winning; returns PATH.
fn check_vars(cri: &Cri, pod: &Pod, fixture: &Fixture) -> Result<String> {
    let spec = ContainerSpec::new("env", EMPTY_IMAGE)
        .command(&[&fixture.busybox_bin(), "env"])
        .env("OVERRIDDEN", "from the pod");
    let env = env_map(&run_ok(cri, pod, &spec)?);
    let var = |name: &str| env.get(name).map(String::as_str);
    assert_eq!(var("GREETING"), Some("hello from nix"));
    assert_eq!(var("MESSAGE"), Some("hello from nix and friends"));
    assert_eq!(var("OVERRIDDEN"), Some("from the pod"));
    let path = var("PATH").context("no PATH")?.to_owned();
    assert_environment_path(&path);
    Ok(path)
}

/// In a running container: ExecSync gets the same PATH and vars, /nix/store is exactly the
/// closure through one read-only mount that the host does not see, and none of it is writable.
fn check_exec_and_read_only_store(
    cri: &Cri,
    pod: &Pod,
    fixture: &Fixture,
    path: &str,
) -> Result<()> {
    let bb = fixture.busybox_bin();
    let server = ContainerSpec::new("server", EMPTY_IMAGE).command(&[&bb, "sleep", "3600"]);
    let id = cri.run_container(pod, &server)?;
    let exec = cri.exec_sync(&id, &["hello"])?;
    assert_eq!(exec.stdout, expected_hello_output(TAG), "exec: {exec:?}");
    let exec = cri.exec_sync(&id, &[&bb, "sh", "-c", "echo $PATH; echo $MESSAGE"])?;
    assert_eq!(exec.stdout, format!("{path}\nhello from nix and friends\n"));

    // /nix/store holds exactly the closure (the environment's outputs' closure and its view),
    // nothing else of the host's store.
    let view = cri
        .exec_sync(&id, &[&bb, "sh", "-c", "echo $NIXLET_ENV"])?
        .stdout;
    let mut expected = host_closure(&fixture.hello)?;
    expected.insert(view.trim().to_owned());
    assert!(expected.is_superset(&fixture.hello_closure()));
    let listing: BTreeSet<String> = cri
        .exec_sync(&id, &[&bb, "ls", "/nix/store"])?
        .stdout
        .lines()
        .map(|base| format!("/nix/store/{base}"))
        .collect();
    assert_eq!(listing, expected, "/nix/store in the container");

    // One read-only mount, whatever the closure's size: the environment's store tree.
    let mountinfo = cri
        .exec_sync(&id, &[&bb, "cat", "/proc/self/mountinfo"])?
        .stdout;
    let store_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|point| point == "/nix/store" || point.starts_with("/nix/store/"))
        })
        .collect();
    assert_eq!(store_mounts.len(), 1, "store mounts: {store_mounts:#?}");
    let options = store_mounts[0].split(' ').nth(5).unwrap_or_default();
    assert!(
        options.split(',').any(|o| o == "ro")
            && options.split(',').any(|o| o == "nosuid")
            && options.split(',').any(|o| o == "nodev"),
        "store mount options {options:?}"
    );
    // The container's mounts stay in its own namespace: none shows on the host.
    let host = [
        mounts::under(Path::new("/nix/store"))?,
        mounts::under(Path::new(TREES_DIR))?,
    ];
    ensure!(
        host.iter().all(Vec::is_empty),
        "store mounts on the host: {host:?}"
    );

    for file in [
        format!("{}/intruder", fixture.hello),
        format!("{}/share/message", fixture.data),
        "/nix/store/intruder".to_owned(),
    ] {
        let write = cri.exec_sync(&id, &[&bb, "touch", &file])?;
        assert_ne!(write.exit_code, 0, "{file} is writable: {write:?}");
        assert!(
            write.stderr.contains("Read-only file system"),
            "unexpected error writing {file}: {write:?}"
        );
    }
    Ok(())
}

/// The closure of `path` as host Nix sees it.
fn host_closure(path: &str) -> Result<BTreeSet<String>> {
    let out = Command::new("nix-store")
        .args(["-qR", path])
        .output()
        .context("running nix-store -qR")?;
    ensure!(out.status.success(), "nix-store -qR {path}: {out:?}");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Per-path mounts, chosen in the node config or forced by a trees directory on another
/// filesystem (hard links cannot reach the store): the container still gets exactly its closure,
/// read-only, one mount per path.
#[test]
fn per_path_mounts_by_config_and_as_fallback() {
    TestNode::run_test("per_path_mounts_by_config_and_as_fallback", |node| {
        let fixture = publish_hello(node, "acme/hello", TAG)?;
        let other_fs = tempfile::tempdir_in("/dev/shm")?;
        let configs = [
            "[mounts]\nstrategy = \"per-path\"".to_owned(),
            format!("[mounts]\ntrees_dir = \"{}\"", other_fs.path().display()),
        ];
        let cri = node.cri();
        let bb = fixture.busybox_bin();
        for (n, extra) in configs.iter().enumerate() {
            node.set_node_config_extra(extra)?;
            let pod = cri.run_pod(
                &node
                    .pod(&format!("per-path-{n}"), NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let server = ContainerSpec::new("server", EMPTY_IMAGE).command(&[&bb, "sleep", "3600"]);
            let id = cri.run_container(&pod, &server)?;
            let exec = cri.exec_sync(&id, &["hello"])?;
            assert_eq!(exec.stdout, expected_hello_output(TAG), "{extra}: {exec:?}");
            let view = cri
                .exec_sync(&id, &[&bb, "sh", "-c", "echo $NIXLET_ENV"])?
                .stdout;
            let mut expected = host_closure(&fixture.hello)?;
            expected.insert(view.trim().to_owned());
            let mountinfo = cri
                .exec_sync(&id, &[&bb, "cat", "/proc/self/mountinfo"])?
                .stdout;
            let store_mounts: BTreeSet<String> = mountinfo
                .lines()
                .filter(|line| {
                    line.split(' ')
                        .nth(5)
                        .is_some_and(|o| o.split(',').any(|o| o == "ro"))
                })
                .filter_map(|line| line.split(' ').nth(4))
                .filter(|point| point.starts_with("/nix/store/"))
                .map(str::to_owned)
                .collect();
            assert_eq!(store_mounts, expected, "{extra}: read-only store mounts");
            let write =
                cri.exec_sync(&id, &[&bb, "touch", &format!("{}/intruder", fixture.hello)])?;
            assert!(
                write.stderr.contains("Read-only file system"),
                "{extra}: {write:?}"
            );
            cri.stop_and_remove_pod(&pod.id)?;
            ensure!(
                node.mounts_of(&id)?.is_empty(),
                "{extra}: rootfs still mounted"
            );
        }
        let trees: Vec<_> = std::fs::read_dir(other_fs.path())?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        ensure!(
            trees.is_empty(),
            "a tree was built across filesystems: {trees:?}"
        );
        Ok(())
    });
}

/// The probe both handlers must run identically: output, PATH and the absence of /nix.
fn plain_probe(name: &str) -> ContainerSpec {
    ContainerSpec::new(name, BUSYBOX_IMAGE).command(&[
        "sh",
        "-c",
        "echo hi from busybox; echo PATH=$PATH; ls /nix 2>&1; echo GREETING=$GREETING",
    ])
}

const PLAIN_PROBE_OUTPUT: &str =
    "hi from busybox\nPATH=/bin\nls: /nix: No such file or directory\nGREETING=\n";

/// Runs the plain probe in a pod under `handler`, plus an ExecSync in a long-running container.
fn plain_pod(node: &TestNode, handler: &str) -> Result<(String, String)> {
    let cri = node.cri();
    let pod = cri.run_pod(&node.pod(&format!("plain-{handler}"), handler))?;
    let out = run_ok(cri, &pod, &plain_probe("probe"))?;
    let id = cri.run_container(
        &pod,
        &ContainerSpec::new("sleeper", BUSYBOX_IMAGE).command(&["sleep", "3600"]),
    )?;
    let exec = cri.exec_sync(&id, &["sh", "-c", "echo exec PATH=$PATH"])?;
    cri.stop_and_remove_pod(&pod.id)?;
    Ok((out, exec.stdout))
}

/// (b) Without the annotation, the nixlet handler runs a busybox container exactly like runc.
#[test]
fn nixlet_handler_without_annotation_behaves_like_runc() {
    TestNode::run_test(
        "nixlet_handler_without_annotation_behaves_like_runc",
        |node| {
            let runc = plain_pod(node, RUNC_HANDLER)?;
            assert_eq!(runc.0, PLAIN_PROBE_OUTPUT);
            assert_eq!(runc.1, "exec PATH=/bin\n");
            let nixlet = plain_pod(node, NIXLET_HANDLER)?;
            assert_eq!(nixlet, runc);
            Ok(())
        },
    );
}

/// (c) The `flox.dev/environment` alias, a per-container override, and skip-containers.
#[test]
fn alias_override_and_skip_containers() {
    TestNode::run_test("alias_override_and_skip_containers", |node| {
        publish_hello(node, "acme/hello", TAG)?;
        publish_hello(node, "acme/other", "other")?;
        let cri = node.cri();

        let flox = cri.run_pod(
            &node
                .pod("flox-alias", NIXLET_HANDLER)
                .annotation(FLOX_ENVIRONMENT, "acme/hello"),
        )?;
        assert_eq!(
            run_ok(cri, &flox, &hello_container("hello"))?,
            expected_hello_output(TAG)
        );

        let mixed = cri.run_pod(
            &node
                .pod("mixed", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, "acme/hello")
                .annotation(&format!("{ENVIRONMENT}.special"), "acme/other:1")
                .annotation(SKIP_CONTAINERS, "plain,unused"),
        )?;
        assert_eq!(
            run_ok(cri, &mixed, &hello_container("regular"))?,
            expected_hello_output(TAG),
            "the pod's environment"
        );
        assert_eq!(
            run_ok(cri, &mixed, &hello_container("special"))?,
            expected_hello_output("other"),
            "the per-container override"
        );
        assert_eq!(
            run_ok(cri, &mixed, &plain_probe("plain"))?,
            PLAIN_PROBE_OUTPUT,
            "a skipped container"
        );
        Ok(())
    });
}

/// Creates and starts `spec` expecting StartContainer to fail; returns the error text after
/// checking that nothing stays mounted below the container's bundle.
fn start_fails(node: &TestNode, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
    let cri = node.cri();
    let id = cri.create_container(pod, spec)?;
    let err = match cri.start_container(&id) {
        Ok(()) => anyhow::bail!("{} started but should have failed", spec.name),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("{}: StartContainer failed as expected: {err}", spec.name);
    let left = node.mounts_of(&id)?;
    ensure!(
        left.is_empty(),
        "{} left mounts behind: {left:?}",
        spec.name
    );
    Ok(err)
}

fn assert_nixlet_error(err: &str, offending: &str) {
    assert!(
        err.contains("nixlet:") && err.contains(offending),
        "expected a nixlet error naming {offending:?}, got: {err}"
    );
}

/// (d) A bad annotation, an unknown environment and a missing store path fail StartContainer with
/// a `nixlet:` message naming the value; nothing stays mounted and the pod still runs containers.
#[test]
fn errors_name_the_value_and_leave_nothing_behind() {
    TestNode::run_test("errors_name_the_value_and_leave_nothing_behind", |node| {
        publish_hello(node, "acme/hello", TAG)?;
        let missing = node.unbuilt_store_path("never-built")?;
        node.publish("acme/missing", 1, &manifest(&[("hello", &missing)], &[]))?;
        let cri = node.cri();

        let bad = cri.run_pod(
            &node
                .pod("bad-annotation", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, "not a reference")
                .annotation(SKIP_CONTAINERS, "survivor"),
        )?;
        let err = start_fails(node, &bad, &hello_container("victim"))?;
        assert_nixlet_error(&err, "not a reference");
        let survivor = ContainerSpec::new("survivor", BUSYBOX_IMAGE).command(&["echo", "alive"]);
        assert_eq!(run_ok(cri, &bad, &survivor)?, "alive\n");

        let pod = cri.run_pod(
            &node
                .pod("bad-overrides", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, "acme/hello")
                .annotation(&format!("{ENVIRONMENT}.unknown"), "acme/nope")
                .annotation(&format!("{ENVIRONMENT}.missing"), "acme/missing"),
        )?;
        let err = start_fails(node, &pod, &hello_container("unknown"))?;
        assert_nixlet_error(&err, "acme/nope");
        let err = start_fails(node, &pod, &hello_container("missing"))?;
        assert_nixlet_error(&err, &missing);
        assert_eq!(
            run_ok(cri, &pod, &hello_container("survivor"))?,
            expected_hello_output(TAG)
        );
        Ok(())
    });
}

/// (e) containerd is killed and restarted under a running nixlet pod: ExecSync still works with
/// the environment, and the pod stops and is removed cleanly.
#[test]
fn nixlet_pod_survives_a_containerd_restart() {
    TestNode::run_test("nixlet_pod_survives_a_containerd_restart", |node| {
        let fixture = publish_hello(node, "acme/hello", TAG)?;
        let pod = node.cri().run_pod(
            &node
                .pod("restart", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, "acme/hello"),
        )?;
        let id = node.cri().run_container(&pod, &fixture.sleeper("server"))?;
        assert_eq!(
            node.cri().exec_sync(&id, &["hello"])?.stdout,
            expected_hello_output(TAG)
        );

        let before = node.containerd_pid();
        node.restart_containerd()?;
        ensure!(
            node.containerd_pid() != before,
            "containerd was not restarted"
        );

        let cri = node.cri();
        let exec = cri.exec_sync(&id, &["hello"])?;
        assert_eq!(
            exec.stdout,
            expected_hello_output(TAG),
            "exec after restart: {exec:?}"
        );
        cri.stop_container(&id)?;
        cri.wait_exit(&id, Duration::from_secs(10))?;
        cri.stop_and_remove_pod(&pod.id)?;
        ensure!(cri.pod_ids()?.is_empty(), "pod still listed after removal");
        ensure!(node.mounts_of(&id)?.is_empty(), "rootfs still mounted");
        Ok(())
    });
}
