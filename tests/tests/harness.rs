//! Checks of the harness itself, under the plain runc handler and without the nixlet shim, so a
//! red run here points at the host or the harness, not at nixlet.

use std::time::Duration;

use nixlet_e2e::containerd_config::RUNC_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::images::{BUSYBOX_IMAGE, EMPTY_IMAGE};
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;

/// The empty image runs a store path that CRI itself bind-mounts (no nixlet involved): proves the
/// fixture's closure is complete and the empty image is usable.
#[test]
fn empty_image_runs_a_closure_mounted_by_cri() {
    TestNode::run_runc_test("empty_image_runs_a_closure_mounted_by_cri", |node| {
        let fixture = node.fixture("harness")?;
        let cri = node.cri();
        let pod = cri.run_pod(&node.pod("harness-empty", RUNC_HANDLER))?;
        let mut hello = ContainerSpec::new("hello", EMPTY_IMAGE)
            .command(&[&format!("{}/bin/hello", fixture.hello)])
            .readonly_rootfs();
        for path in fixture.hello_closure() {
            hello = hello.mount_ro(&path, &path);
        }
        let (code, out) = cri.run_to_exit(&pod, &hello)?;
        assert_eq!(
            (code, out.as_str()),
            (0, expected_hello_output("harness").as_str())
        );
        Ok(())
    });
}

/// A busybox pod under runc: log capture, exit codes, ExecSync, stop and removal.
#[test]
fn busybox_pod_under_runc() {
    TestNode::run_runc_test("busybox_pod_under_runc", |node| {
        let cri = node.cri();
        let pod = cri.run_pod(&node.pod("harness-busybox", RUNC_HANDLER))?;
        let echo = ContainerSpec::new("echo", BUSYBOX_IMAGE).command(&[
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; exit 3",
        ]);
        let (code, out) = cri.run_to_exit(&pod, &echo)?;
        assert_eq!((code, out.as_str()), (3, "one\nthree\n"));

        let sleeper = ContainerSpec::new("sleeper", BUSYBOX_IMAGE).command(&["sleep", "3600"]);
        let id = cri.run_container(&pod, &sleeper)?;
        let exec = cri.exec_sync(&id, &["sh", "-c", "echo $PATH; exit 7"])?;
        assert_eq!((exec.exit_code, exec.stdout.as_str()), (7, "/bin\n"));
        assert!(
            !node.mounts_of(&id)?.is_empty(),
            "a running container has its rootfs mounted"
        );

        cri.stop_container(&id)?;
        assert_eq!(cri.wait_exit(&id, Duration::from_secs(10))?, 137);
        cri.stop_and_remove_pod(&pod.id)?;
        assert!(cri.pod_ids()?.is_empty());
        assert!(node.mounts_of(&id)?.is_empty());
        Ok(())
    });
}
