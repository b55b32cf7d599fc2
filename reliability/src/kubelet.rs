//! Starting a pod the way the kubelet does, and what it does when a start fails: StartContainer
//! again with a new attempt in the same sandbox while the sandbox is ready, or, once its pause
//! container died (a nixlet shim killed takes the pod's sandbox with it), stop it and make a new
//! sandbox (attempt + 1), removing the old one afterwards.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nixlet_e2e::cri::{ContainerSpec, Cri, Pod, PodSpec};
use nixlet_e2e::images::EMPTY_IMAGE;

use crate::rel_node::Ids;

/// The first line every container of the suite prints once its environment works.
pub const READY: &str = "ready";

/// How long a container may take to print [`READY`] after StartContainer returned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The suite's container: runs the environment's `fetched-tool` (which reads the closure's
/// data path with its busybox), says it is ready, and idles like a server.
pub fn app(attempt: u32) -> ContainerSpec {
    let mut spec = ContainerSpec::new("app", EMPTY_IMAGE).command(&[
        "busybox",
        "sh",
        "-c",
        "fetched-tool && echo ready && exec busybox sleep 86400",
    ]);
    spec.attempt = attempt;
    spec
}

/// A pod that is running its app container.
#[derive(Debug, Clone)]
pub struct Running {
    pub pod: Pod,
    pub container: String,
    /// What `fetched-tool` printed.
    pub output: String,
}

/// RunPodSandbox, CreateContainer, StartContainer, then waits for [`READY`].
pub fn start_pod(ids: &Ids, cri: &Cri, spec: &PodSpec) -> Result<Running> {
    let pod = cri.run_pod(spec)?;
    ids.remember(&pod.id);
    start_in(ids, cri, &pod, &app(0))
}

/// CreateContainer and StartContainer of `container` in `pod`, then waits for [`READY`].
pub fn start_in(ids: &Ids, cri: &Cri, pod: &Pod, container: &ContainerSpec) -> Result<Running> {
    let id = cri.create_container(pod, container)?;
    ids.remember(&id);
    cri.start_container(&id)
        .with_context(|| format!("starting container {id}"))?;
    let output = wait_ready(&pod.log_directory.join(container.log_path()))?;
    Ok(Running {
        pod: pod.clone(),
        container: id,
        output,
    })
}

/// Polls the CRI log until [`READY`]; returns the stdout lines before it.
pub fn wait_ready(log: &Path) -> Result<String> {
    let started = Instant::now();
    let wanted = format!(" stdout F {READY}");
    loop {
        if let Ok(text) = fs::read_to_string(log) {
            if let Some(at) = text.lines().position(|l| l.ends_with(&wanted)) {
                let before: Vec<&str> = text
                    .lines()
                    .take(at)
                    .filter_map(|l| l.split_once(" stdout F ").map(|(_, rest)| rest))
                    .collect();
                return Ok(before.iter().map(|l| format!("{l}\n")).collect());
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "no {READY:?} line in {} after {READY_TIMEOUT:?}",
                log.display()
            );
        }
        sleep(Duration::from_millis(20));
    }
}

/// The kubelet's recovery after the app container of `failed_pod` failed to start: retries
/// (new container attempt, or a new sandbox once the old one is not ready) until the app runs
/// or `deadline` passes. Returns the running pod; the old sandbox is removed when replaced.
pub fn recover(
    ids: &Ids,
    cri: &Cri,
    spec: &PodSpec,
    failed_pod: &Pod,
    deadline: Duration,
) -> Result<Running> {
    let started = Instant::now();
    let mut pod = failed_pod.clone();
    let mut pod_spec = spec.clone();
    let mut attempt = 1;
    let mut last_error = String::new();
    while started.elapsed() < deadline {
        let ready = cri.pod_ready(&pod.id).unwrap_or(false);
        let outcome = if ready {
            start_in(ids, cri, &pod, &app(attempt))
        } else {
            // The sandbox died: the kubelet stops it, makes the next one, removes the old.
            let _ = cri.stop_pod(&pod.id);
            pod_spec.attempt += 1;
            let old = pod.id.clone();
            match cri.run_pod(&pod_spec) {
                Ok(new) => {
                    ids.remember(&new.id);
                    pod = new;
                    let _ = cri.stop_and_remove_pod(&old);
                    start_in(ids, cri, &pod, &app(0))
                }
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok(running) => return Ok(running),
            Err(e) => last_error = format!("{e:#}"),
        }
        attempt += 1;
        // The kubelet backs off for longer; a second keeps the suite short.
        sleep(Duration::from_secs(1));
    }
    bail!("the pod did not recover within {deadline:?}; last error: {last_error}")
}
