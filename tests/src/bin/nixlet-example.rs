//! The quick start's main job: the echoserver example pod, end to end, on a private containerd
//! with the nixlet handler, driven through CRI as the kubelet would.
//!
//!   nixlet-example STORE_PATH
//!
//! STORE_PATH is the echoserver built by `examples/echoserver/build-cache.sh`. The pod runs on an
//! empty image; the program comes from the environment's PATH. Everything started is stopped.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::http_get::get_root;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::{Shim, TestNode};
use nixlet_e2e::node_config::manifest;

const ENVIRONMENT: &str = "nixlet/echoserver";
const PORT: u16 = 8080;

fn main() {
    let Some(store_path) = std::env::args().nth(1) else {
        eprintln!("usage: nixlet-example ECHOSERVER_STORE_PATH");
        std::process::exit(2);
    };
    let node = match TestNode::start("quickstart", Shim::Built) {
        Ok(node) => node,
        Err(error) => {
            eprintln!("nixlet-example: starting containerd: {error:#}");
            std::process::exit(1);
        }
    };
    let outcome = run(&node, &store_path);
    let teardown = node.finish();
    if let Err(error) = outcome.and(teardown) {
        eprintln!("nixlet-example: {error:#}");
        std::process::exit(1);
    }
}

fn run(node: &TestNode, store_path: &str) -> Result<()> {
    node.publish(
        ENVIRONMENT,
        1,
        &manifest(
            &[("echoserver", store_path)],
            &[("MESSAGE", "hello from nix"), ("PORT", &PORT.to_string())],
        ),
    )?;
    println!("environment {ENVIRONMENT}:1 installs {store_path}");

    let cri = node.cri();
    let pod = cri.run_pod(
        &node
            .pod("echoserver", NIXLET_HANDLER)
            .annotation("nixlet.dev/environment", ENVIRONMENT),
    )?;
    let server = ContainerSpec::new("echoserver", EMPTY_IMAGE).command(&["echoserver"]);
    let started = Instant::now();
    let id = cri.run_container(&pod, &server)?;
    let answer = get_when_listening(PORT, Duration::from_secs(20))?;
    println!(
        "pod started on the empty image in {} ms",
        started.elapsed().as_millis()
    );
    println!("curl http://127.0.0.1:{PORT}/ -> {answer}");

    let exec = cri.exec_sync(&id, &["sh", "-c", "echo PATH=$PATH; ls /nix/store"])?;
    println!("kubectl exec echoserver -- sh -c 'echo $PATH; ls /nix/store':");
    for line in exec.stdout.lines() {
        println!("  {line}");
    }
    println!("pod log:");
    for line in cri.stdout(&pod, &server)?.lines() {
        println!("  {line}");
    }
    cri.stop_and_remove_pod(&pod.id)?;
    Ok(())
}

/// The echoserver's answer to `GET /`, once it listens (host network: the node's port).
fn get_when_listening(port: u16, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        match get_root(port) {
            Ok(body) => return Ok(body),
            Err(error) if Instant::now() > deadline => {
                return Err(error).context(format!("GET / on port {port}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
