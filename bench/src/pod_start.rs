//! Starting one pod the way the kubelet does and timing it up to the program's first output
//! line, which is what a user waits for.

use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nixlet_e2e::cri::{ContainerSpec, Cri, Pod, PodSpec};

/// The line the program prints first.
pub const READY: &str = "ready";

/// What every benchmark container runs, whichever the handler: busybox prints a line and then
/// idles like a server. In the busybox image `busybox` is `/bin/busybox`; in a nixlet
/// environment it is found through the environment's PATH.
pub const ARGV: &[&str] = &[
    "busybox",
    "sh",
    "-c",
    "echo ready; exec busybox sleep 86400",
];

/// How long a start may take before the scenario fails (a cold start downloads a closure).
const TIMEOUT: Duration = Duration::from_secs(300);

/// Phases of one pod start, each measured from the RunPodSandbox call.
#[derive(Debug, Clone)]
pub struct Started {
    pub pod: Pod,
    /// RunPodSandbox returned.
    pub sandbox: Duration,
    /// The image was pulled (the same as `sandbox` when nothing is pulled).
    pub pulled: Duration,
    /// CreateContainer and StartContainer returned.
    pub started: Duration,
    /// The container's first stdout line is in its CRI log file.
    pub first_line: Duration,
}

/// The benchmark container on `image`.
pub fn app_container(image: &str) -> ContainerSpec {
    ContainerSpec::new("app", image).command(ARGV)
}

/// RunPodSandbox, CreateContainer, StartContainer, then polls the CRI log file.
pub fn start_pod(cri: &Cri, pod: &PodSpec, image: &str) -> Result<Started> {
    start_container(cri, pod, &app_container(image), || Ok(()))
}

/// Like [`start_pod`], calling `pull` between RunPodSandbox and CreateContainer, where the
/// kubelet pulls a missing image.
pub fn start_pod_pulling(
    cri: &Cri,
    pod: &PodSpec,
    image: &str,
    pull: impl FnOnce() -> Result<()>,
) -> Result<Started> {
    start_container(cri, pod, &app_container(image), pull)
}

/// The general form: any container spec (it must print [`READY`] first).
pub fn start_container(
    cri: &Cri,
    pod: &PodSpec,
    container: &ContainerSpec,
    pull: impl FnOnce() -> Result<()>,
) -> Result<Started> {
    let t0 = Instant::now();
    let pod = cri.run_pod(pod)?;
    let sandbox = t0.elapsed();
    pull()?;
    let pulled = t0.elapsed();
    cri.run_container(&pod, container)?;
    let started = t0.elapsed();
    wait_for_first_line(&pod.log_directory.join(container.log_path()), t0)?;
    Ok(Started {
        pod,
        sandbox,
        pulled,
        started,
        first_line: t0.elapsed(),
    })
}

/// Polls every half millisecond: the resolution must be far below the differences measured.
fn wait_for_first_line(log: &Path, t0: Instant) -> Result<()> {
    let wanted = format!(" stdout F {READY}");
    loop {
        if let Ok(text) = fs::read_to_string(log) {
            if text.lines().any(|l| l.ends_with(&wanted)) {
                return Ok(());
            }
        }
        if t0.elapsed() > TIMEOUT {
            bail!("no {READY:?} line in {} after {TIMEOUT:?}", log.display());
        }
        sleep(Duration::from_micros(500));
    }
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
