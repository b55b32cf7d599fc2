//! nixlet's shim declared the other way containerd allows: `runtime_type =
//! "io.containerd.runc.v2"` with `runtime_path` naming nixlet's shim (README, "containerd
//! 2.0-2.3"). containerd then treats the handler as runc: it hands the handler's own runc
//! `options` to nixlet, which passes them on, and containerd before 2.4 asks it for the runtime's
//! features (recursive read-only mounts, user namespaces), which it asks only of runc-type
//! runtimes. A pod of an environment runs through it as through the `nixlet` handler.
//!
//! containerd 1.6 does not start a pod's later containers through `runtime_path` (they reach the
//! runc shim itself, unrewritten), so the form is for 1.7 and later; on 1.6 the test only checks
//! Status, which reports no features for any handler there.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use nixlet_e2e::containerd_config::NIXLET_RUNC_TYPE_HANDLER;
use nixlet_e2e::containerd_version;
use nixlet_e2e::expect::has_runcs_features;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "runc-type-handler";

#[test]
fn a_runc_type_handler_runs_nixlet_with_its_own_options_and_runc_features() {
    TestNode::run_test(
        "a_runc_type_handler_runs_nixlet_with_its_own_options_and_runc_features",
        |node| {
            let cri = node.cri();
            has_runcs_features(cri, NIXLET_RUNC_TYPE_HANDLER)?;
            let version = containerd_version::installed()?;
            if (version.major, version.minor) < (1, 7) {
                eprintln!(
                    "runc_type_handler: containerd {} does not start containers through \
                     runtime_path; the form needs 1.7 or later",
                    version.text
                );
                return Ok(());
            }

            let fixture = node.publish_hello("acme/hello", TAG)?;
            let pod = cri.run_pod(
                &node
                    .pod("runc-type", NIXLET_RUNC_TYPE_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let id = cri.run_container(&pod, &fixture.sleeper("server"))?;
            let exec = cri.exec_sync(&id, &["hello"])?;
            ensure!(
                exec.stdout == expected_hello_output(TAG),
                "the environment's hello through the runc-type handler: {exec:?}"
            );
            // The handler's own `options` reached runc: its state lives under their Root.
            let root = node.containerd_paths().runc_type_root();
            for container in [&pod.id, &id] {
                let state = root.join("k8s.io").join(container).join("state.json");
                ensure!(
                    state.is_file(),
                    "no runc state for {container} under the handler's Root {}",
                    root.display()
                );
                let options = recorded_options(&node.bundle(container))?;
                ensure!(
                    options["root"] == root.display().to_string(),
                    "the runc shim recorded options {options} for {container}"
                );
            }
            cri.stop_and_remove_pod(&pod.id)?;
            ensure!(
                !root.join("k8s.io").join(&id).exists(),
                "runc state left under the handler's Root after the pod was removed"
            );
            Ok(())
        },
    );
}

/// The options the runc shim wrote into the bundle at Create.
fn recorded_options(bundle: &Path) -> Result<serde_json::Value> {
    let path = bundle.join("options.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
