//! containerd killed with SIGKILL (a crash, as far as the shims can tell) and started again:
//!
//! - mid-Create: a pod's StartContainer waits on a NAR the cache holds after half its bytes
//!   while another pod runs; containerd dies, comes back, the cache goes on. The running pod
//!   must keep running and answer exec; the kubelet's retry of the interrupted one must run it.
//! - with pods running: three pods run; containerd dies and comes back. Each must still run,
//!   with exec working, and go cleanly when removed.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use k8s_cri::v1::ContainerState;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::Cri;
use nixlet_e2e::http_server::{Fault, HttpServer, Match};

use super::closing::{baseline, close_run};
use super::Context;
use crate::kubelet::{self, app, Running};
use crate::rel_node::{NodeOptions, RelNode};
use crate::remote_envs::{CacheSet, RemoteEnv};
use crate::results::{RunRecord, ScenarioReport};

const ENVIRONMENT: &str = "nixlet.dev/environment";
const REACH: Duration = Duration::from_secs(30);
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let runs = ctx.runs(1, 5);
    report.method = vec![
        format!("One node, two environments fetched from a loopback binary cache; {runs} run(s) of each variant; containerd is killed with SIGKILL and started again with the same config (its shims outlive it, as they are meant to)."),
        "Mid-Create: one pod runs; another's StartContainer waits on a NAR the cache holds after half its bytes when containerd dies; the cache goes on once containerd is back. The running pod must still run and answer exec (`fetched-tool` through the environment's PATH); the interrupted pod is retried as the kubelet does and must run. Recovery: from the kill until the retried container runs.".into(),
        "With pods running: three pods run when containerd dies. Each must still run and answer exec once containerd is back. Recovery: from the kill until every exec answered.".into(),
        "Then every pod is removed: nothing may be left compared with before, and no path of the environments may be invalid.".into(),
    ];
    let work = ctx.dir("containerd-kill")?;
    let set = CacheSet::build(&work, &format!("relcd{}", std::process::id()), 2, "xz")?;
    let mut node = RelNode::start(
        "reliability-containerd-kill",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&mut node, &set, runs, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

fn scenario(
    node: &mut RelNode,
    set: &CacheSet,
    runs: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    set.publish(node)?;
    let cache = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&cache.url()))?;
    let (running_env, fetched_env) = (&set.envs[0], &set.envs[1]);
    kubelet::start_pod(
        node.ids(),
        node.node.cri(),
        &pod_spec(node, "warm-up", running_env),
    )?;
    let baseline = baseline(node)?;
    for i in 0..runs {
        eprintln!("containerd-kill: mid-Create ({}/{runs})", i + 1);
        let mut record = RunRecord::new("killed mid-Create");
        if let Err(e) = mid_create(node, &cache, set, running_env, fetched_env, &mut record) {
            record.fail(format!("{e:#}"));
        }
        cache.clear();
        cache.release();
        close_run(node, &set.installed_paths(), &baseline, &mut record);
        report.runs.push(record);
    }
    for i in 0..runs {
        eprintln!("containerd-kill: pods running ({}/{runs})", i + 1);
        let mut record = RunRecord::new("killed with 3 pods running");
        if let Err(e) = pods_running(node, running_env, &mut record) {
            record.fail(format!("{e:#}"));
        }
        close_run(node, &set.installed_paths(), &baseline, &mut record);
        report.runs.push(record);
    }
    report.findings.push(format!(
        "Pods started before containerd died kept running and answered exec after it came back; the longest recovery took {:.1} s.",
        report.longest_recovery_ms().unwrap_or_default() / 1000.0
    ));
    let retried = report
        .runs
        .iter()
        .filter(|r| r.variant == "killed mid-Create" && r.detail.contains("kubelet's retry"))
        .count();
    if retried > 0 {
        report.findings.push(format!(
            "In {retried} of {runs} mid-Create runs the first RemovePodSandbox of the interrupted pod failed with `cannot delete running task` and the kubelet's next try removed it: containerd 1.6, restarted, loads the interrupted container's bundle as a task (the shim never created it), and once StopPodSandbox ended the pod's shim, asks that shim for the task's state, gets a closed connection, and refuses to delete until it has handled the shim's exit (about 0.1 s later). Nothing is left; the stock runc shim has the same window, milliseconds wide, which nixlet's Create (a fetch) widens."
        ));
    }
    Ok(())
}

fn pod_spec(node: &RelNode, name: &str, env: &RemoteEnv) -> nixlet_e2e::cri::PodSpec {
    node.node
        .pod(name, NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference)
}

fn mid_create(
    node: &mut RelNode,
    cache: &HttpServer,
    set: &CacheSet,
    running_env: &RemoteEnv,
    fetched_env: &RemoteEnv,
    record: &mut RunRecord,
) -> Result<()> {
    fetched_env.make_cold()?;
    let ids = node.ids().clone();
    let bystander = kubelet::start_pod(
        &ids,
        node.node.cri(),
        &pod_spec(node, "bystander", running_env),
    )?;
    let nar = set
        .cache()?
        .nar_request_path(&fetched_env.closure.busybox)?;
    let size = std::fs::metadata(set.dir.join(nar.trim_start_matches('/')))?.len();
    cache.fail(Match::Path(nar.clone()), Fault::HoldAfter(size / 2), None);
    let spec = pod_spec(node, "interrupted", fetched_env);
    let cri = node.node.cri();
    let pod = cri.run_pod(&spec)?;
    ids.remember(&pod.id);
    let container = cri.create_container(&pod, &app(0))?;
    ids.remember(&container);
    let starter = Cri::connect(node.node.containerd_address())?;
    let (kill_at, started) = thread::scope(|scope| -> Result<_> {
        let start = scope.spawn(|| starter.start_container(&container));
        let reached = cache.wait_held(&Match::Path(nar.clone()), REACH);
        let kill_at = Instant::now();
        let restarted = node.node.restart_containerd();
        cache.clear();
        cache.release();
        let started = start
            .join()
            .map_err(|_| anyhow::anyhow!("the StartContainer thread panicked"))?;
        reached?;
        restarted?;
        Ok((kill_at, started))
    })?;
    match started {
        Ok(()) => record.note("the interrupted StartContainer returned success"),
        Err(e) => record.note(format!(
            "the interrupted StartContainer failed: {}",
            format!("{e:#}").lines().next().unwrap_or_default()
        )),
    }
    let cri = node.node.cri();
    still_serves(cri, &bystander, running_env).context("the pod that ran before the kill")?;
    let recovered = kubelet::recover(&ids, cri, &spec, &pod, RECOVERY_DEADLINE)?;
    record.recovery_ms = Some(kill_at.elapsed().as_secs_f64() * 1000.0);
    ensure!(
        recovered.output == fetched_env.closure.expected_output(),
        "the retried container printed {:?}",
        recovered.output
    );
    Ok(())
}

fn pods_running(node: &mut RelNode, env: &RemoteEnv, record: &mut RunRecord) -> Result<()> {
    let ids = node.ids().clone();
    let mut pods = Vec::new();
    for n in 0..3 {
        let spec = pod_spec(node, &format!("running-{n}"), env);
        pods.push(kubelet::start_pod(&ids, node.node.cri(), &spec)?);
    }
    let kill_at = Instant::now();
    node.node.restart_containerd()?;
    let cri = node.node.cri();
    for pod in &pods {
        still_serves(cri, pod, env)?;
    }
    record.recovery_ms = Some(kill_at.elapsed().as_secs_f64() * 1000.0);
    record.note("every pod still ran and answered exec");
    Ok(())
}

/// The container still runs and `fetched-tool` answers through exec.
fn still_serves(cri: &Cri, running: &Running, env: &RemoteEnv) -> Result<()> {
    let status = cri.container_status(&running.container)?;
    if status.state != ContainerState::ContainerRunning as i32 {
        bail!(
            "container {} is in state {} after the restart",
            running.container,
            status.state
        );
    }
    let exec = cri.exec_sync(&running.container, &["fetched-tool"])?;
    ensure!(
        exec.exit_code == 0 && exec.stdout == env.closure.expected_output(),
        "exec in {} answered {} {:?} {:?}",
        running.container,
        exec.exit_code,
        exec.stdout,
        exec.stderr
    );
    Ok(())
}
