//! A nixlet shim that dies (the OOM killer, a panic, `kill -9`) must not leave its pod's runc
//! shim behind: containerd cleans up after a dead shim by running its `delete` action for each
//! container, and nixlet's `delete` must take the runc shim down with the pod, as containerd's
//! cleanup does for a dead runc shim. The harness's teardown then checks that no shim of this
//! containerd runs and no shim socket is left.

use std::time::Duration;

use anyhow::ensure;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::{procs, wait};

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "shim-crash";

/// nixlet's daemons (not its `start`/`delete` runs) serving this node's containerd.
fn nixlet_daemons(node: &TestNode) -> Vec<i32> {
    procs::nixlet_daemons_of(&node.containerd_paths().address.display().to_string())
}

#[test]
fn a_killed_nixlet_shim_takes_its_runc_shim_with_the_pod() {
    TestNode::run_test(
        "a_killed_nixlet_shim_takes_its_runc_shim_with_the_pod",
        |node| {
            let fixture = node.publish_hello("acme/hello", TAG)?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("crash", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let id = cri.run_container(&pod, &fixture.sleeper("server"))?;
            ensure!(cri.exec_sync(&id, &["hello"])?.stdout == expected_hello_output(TAG));

            let daemons = nixlet_daemons(node);
            ensure!(
                daemons.len() == 1,
                "expected one nixlet daemon, found {daemons:?}"
            );
            procs::kill_all(daemons.iter().copied());
            // containerd notices the shim is gone and reports the container exited.
            cri.wait_exit(&id, Duration::from_secs(20))?;

            cri.stop_and_remove_pod(&pod.id)?;
            let address = node.containerd_paths().address.display().to_string();
            let left = wait::poll(
                "the pod's shims to exit",
                Duration::from_secs(10),
                Duration::from_millis(100),
                || Ok(procs::shims_of(&address).is_empty().then_some(())),
            );
            ensure!(
                left.is_ok(),
                "shims still running after the pod was removed: {:?}",
                procs::shims_of(&address)
                    .into_iter()
                    .filter_map(procs::cmdline)
                    .map(|argv| argv.join(" "))
                    .collect::<Vec<_>>()
            );

            // The node still runs nixlet pods.
            let again = cri.run_pod(
                &node
                    .pod("after-crash", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let hello = ContainerSpec::new("hello", EMPTY_IMAGE).command(&["hello"]);
            let (code, out) = cri.run_to_exit(&again, &hello)?;
            ensure!(
                code == 0 && out == expected_hello_output(TAG),
                "after the crash: {code} {out:?}"
            );
            Ok(())
        },
    );
}
