//! The reference app as the quick start runs it, and as a Kubernetes pod is stopped: built into a
//! signed binary cache by `examples/echoserver/build-cache.sh`, run on the empty image from its
//! environment's PATH, answering `GET /`, and stopping at once on SIGTERM (StopContainer with a
//! 30 s grace period, as `kubectl delete` sends it) instead of waiting for the SIGKILL.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::http_get::get_root;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;
use nixlet_e2e::shim_build::workspace_root;
use nixlet_e2e::wait;

const GRACE: Duration = Duration::from_secs(30);
const PROMPT_STOP: Duration = Duration::from_secs(2);

#[test]
fn echoserver_answers_and_stops_at_once_on_sigterm() {
    TestNode::run_test("echoserver_answers_and_stops_at_once_on_sigterm", |node| {
        let out = node.scratch_subdir("echoserver")?;
        let built = Command::new("bash")
            .arg(workspace_root().join("examples/echoserver/build-cache.sh"))
            .arg(&out)
            .output()
            .context("running build-cache.sh")?;
        ensure!(
            built.status.success(),
            "build-cache.sh failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let store_path = std::fs::read_to_string(out.join("store-path"))?
            .trim()
            .to_string();

        // Host network: a port of its own, so that parallel tests cannot collide.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        node.publish(
            "nixlet/echoserver",
            1,
            &manifest(
                &[("echoserver", &store_path)],
                &[("MESSAGE", "hello from nix"), ("PORT", &port.to_string())],
            ),
        )?;
        let cri = node.cri();
        let pod = cri.run_pod(
            &node
                .pod("echoserver", NIXLET_HANDLER)
                .annotation("nixlet.dev/environment", "nixlet/echoserver"),
        )?;
        let id = cri.run_container(
            &pod,
            &ContainerSpec::new("echoserver", EMPTY_IMAGE).command(&["echoserver"]),
        )?;
        let answer = wait::poll(
            "echoserver to answer",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || Ok(get_root(port).ok()),
        )?;
        let json: serde_json::Value = serde_json::from_str(&answer)?;
        ensure!(
            json["message"] == "hello from nix",
            "GET / answered {answer}"
        );

        let started = Instant::now();
        cri.stop_container_within(&id, GRACE)?;
        let took = started.elapsed();
        let code = cri.wait_exit(&id, Duration::from_secs(5))?;
        eprintln!(
            "StopContainer with a {GRACE:?} grace period returned after {took:?}; exit code {code}"
        );
        ensure!(took < PROMPT_STOP, "the echoserver took {took:?} to stop");
        ensure!(code == 0, "the echoserver exited with {code}, not 0");
        cri.stop_and_remove_pod(&pod.id)?;
        Ok(())
    });
}
