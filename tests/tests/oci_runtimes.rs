//! A nixlet pod with each OCI runtime nixlet supports as `[runtime] binary_name`: runc (the
//! default), crun and youki. Each test runs the same pod on its own node and checks that the
//! environment's program ran (pod log and ExecSync), that the named runtime, not runc, ran the
//! sandbox and the containers (its own state format and `state` command), and that removing the
//! pod leaves no runtime state; the harness then checks for leaked shims, mounts and cgroups.
//!
//! crun and youki are prerequisites like containerd: a host without them skips these tests, and
//! CI (`CI=true`) fails. scripts/install-deps.sh installs both.

use anyhow::{ensure, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;
use nixlet_e2e::oci_runtime::OciRuntime;
use nixlet_e2e::prereq;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "oci-runtimes";

#[test]
fn nixlet_pod_runs_with_runc() {
    run_with(OciRuntime::Runc);
}

#[test]
fn nixlet_pod_runs_with_crun() {
    run_with(OciRuntime::Crun);
}

#[test]
fn nixlet_pod_runs_with_youki() {
    run_with(OciRuntime::Youki);
}

fn run_with(runtime: OciRuntime) {
    let test = format!("nixlet_pod_runs_with_{}", runtime.name());
    if !prereq::ready_with(&test, runtime.missing()) {
        return;
    }
    TestNode::run_test(&test, |node| pod_lifecycle(node, runtime));
}

fn pod_lifecycle(node: &mut TestNode, runtime: OciRuntime) -> Result<()> {
    let binary_name = runtime.binary_name(&node.scratch_subdir("oci-runtime")?)?;
    eprintln!("{}: binary_name = {binary_name}", runtime.name());
    node.set_oci_runtime(&binary_name)?;
    let fixture = node.fixture(TAG)?;
    node.publish(
        "acme/hello",
        1,
        &manifest(&[("hello", &fixture.hello)], &[]),
    )?;

    let cri = node.cri();
    if runtime.refuses_containerds_spec()? {
        // Debian 12's crun 1.8 predates runtime-spec 1.2, which containerd 1.7.24 and 2.x write
        // into every bundle: it refuses all of them, under any shim. What nixlet owes here is that crun is
        // the one that ran and that its own error reaches the kubelet.
        let error = match cri.run_pod(&node.pod("hello", NIXLET_HANDLER)) {
            Ok(pod) => anyhow::bail!(
                "{} ran pod {} although it refuses this spec version",
                runtime.name(),
                pod.id
            ),
            Err(error) => format!("{error:#}"),
        };
        ensure!(
            error.contains("unknown version specified"),
            "expected crun's own refusal of the spec version, got: {error}"
        );
        eprintln!(
            "{}: refuses containerd's runtime-spec version under any shim; its error reached CRI: {error}",
            runtime.name()
        );
        return Ok(());
    }
    let pod = cri.run_pod(
        &node
            .pod("hello", NIXLET_HANDLER)
            .annotation(ENVIRONMENT, "acme/hello"),
    )?;
    // The sandbox (pause) container goes through the same runc shim options.
    runtime.assert_runs(&pod.id)?;

    // A program of the environment, found through PATH on the empty image: its output in the log.
    let hello = ContainerSpec::new("hello", EMPTY_IMAGE).command(&["hello"]);
    let (code, out) = cri.run_to_exit(&pod, &hello)?;
    ensure!(code == 0, "hello exited with {code}; stdout: {out}");
    ensure!(
        out == expected_hello_output(TAG),
        "hello printed {out:?} under {}",
        runtime.name()
    );

    // A running container: ExecSync goes through the runtime's `exec` with the environment's
    // PATH.
    let server = ContainerSpec::new("server", EMPTY_IMAGE).command(&[
        &fixture.busybox_bin(),
        "sleep",
        "3600",
    ]);
    let server_id = cri.run_container(&pod, &server)?;
    runtime.assert_runs(&server_id)?;
    let exec = cri.exec_sync(&server_id, &["hello"])?;
    ensure!(
        exec.exit_code == 0 && exec.stdout == expected_hello_output(TAG),
        "exec of hello under {}: {exec:?}",
        runtime.name()
    );

    let containers = cri.containers_of(&pod.id)?;
    cri.stop_and_remove_pod(&pod.id)?;
    for id in containers.iter().chain([&pod.id]) {
        runtime.assert_gone(id)?;
    }
    Ok(())
}
