//! The node config's `[runtime.runc_options]` reach the runc shim, for the sandbox and every
//! container of a nixlet pod, on whichever containerd the suite runs: containerd itself hands a
//! nixlet handler's options only to nixlet, in a wrapper the runc shim cannot read.
//!
//! `Root` and `NoNewKeyring` are checked in the runc shim's own state: the OCI runtime's state
//! directory lives under the configured root, and the runc shim records the options it got in
//! the bundle's `options.json`. `SystemdCgroup` cannot run a container on these hosts (no
//! systemd); it is checked by runc's own refusal, which only the systemd cgroup driver gives.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "runc-options";

#[test]
fn runc_options_of_the_node_config_reach_the_runc_shim() {
    TestNode::run_test(
        "runc_options_of_the_node_config_reach_the_runc_shim",
        |node| {
            let runc_root = node.scratch_subdir("runc-root")?;
            node.set_node_config_extra(&format!(
                "[runtime.runc_options]\nRoot = \"{}\"\nNoNewKeyring = true\n",
                runc_root.display()
            ))?;
            let fixture = node.publish_hello("acme/hello", TAG)?;

            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("options", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "acme/hello"),
            )?;
            let id = cri.run_container(&pod, &fixture.sleeper("server"))?;
            let exec = cri.exec_sync(&id, &["hello"])?;
            ensure!(
                exec.stdout == expected_hello_output(TAG),
                "exec under the configured runc root: {exec:?}"
            );
            for container in [&pod.id, &id] {
                // The runc shim runs runc with `--root <Root>/<namespace>`.
                let state = runc_root.join("k8s.io").join(container).join("state.json");
                ensure!(
                    state.is_file(),
                    "no runc state for {container} under the configured root {}",
                    runc_root.display()
                );
                let options = recorded_options(&node.bundle(container))?;
                ensure!(
                    options["root"] == runc_root.display().to_string()
                        && options["no_new_keyring"] == true,
                    "the runc shim recorded options {options} for {container}"
                );
            }
            cri.stop_and_remove_pod(&pod.id)?;
            ensure!(
                !runc_root.join("k8s.io").join(&id).exists(),
                "runc state left under the configured root after the pod was removed"
            );
            Ok(())
        },
    );
}

#[test]
fn systemd_cgroup_reaches_runc() {
    TestNode::run_test("systemd_cgroup_reaches_runc", |node| {
        let cri = node.cri();
        // Without the option the same pod runs: what fails below is the option, nothing else.
        let plain = cri.run_pod(&node.pod("cgroupfs", NIXLET_HANDLER))?;
        cri.stop_and_remove_pod(&plain.id)?;

        node.set_node_config_extra("[runtime.runc_options]\nSystemdCgroup = true\n")?;
        let error = match cri.run_pod(&node.pod("systemd", NIXLET_HANDLER)) {
            Ok(pod) => anyhow::bail!(
                "pod {} ran with the systemd cgroup driver on a host without systemd",
                pod.id
            ),
            Err(error) => format!("{error:#}"),
        };
        eprintln!("systemd_cgroup_reaches_runc: RunPodSandbox: {error}");
        ensure!(
            error.contains("systemd"),
            "expected runc's systemd cgroup driver to refuse, got: {error}"
        );
        Ok(())
    });
}

/// The options the runc shim wrote into the bundle at Create.
fn recorded_options(bundle: &Path) -> Result<serde_json::Value> {
    let path = bundle.join("options.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
