//! Churn: hundreds of pod create/start/stop/remove cycles over five environments, ten at a
//! time, while `nixlet gc` collects every few seconds with no grace period (so closures,
//! views and trees come and go under the pods), with the node agent reading every shim's
//! telemetry. No cycle may fail, nothing may leak, and the memory of each pod's nixlet shim and
//! the agent's descriptors and memory must stay flat (their slopes are reported).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nixlet_e2e::census::{open_fds, rss_kib};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::{Cri, PodSpec};
use nixlet_e2e::http_server::HttpServer;
use nixlet_e2e::procs;

use super::closing::{baseline, close_run};
use super::Context;
use crate::kubelet;
use crate::rel_node::{paths_deleted, NodeOptions, RelNode};
use crate::remote_envs::CacheSet;
use crate::results::{RunRecord, ScenarioReport};
use crate::slope::{median, slope};

const ENVIRONMENT: &str = "nixlet.dev/environment";
const ENVIRONMENTS: usize = 5;

/// Drift over the whole run a flat series may show: allocators and page caches move a little.
const FLAT_DRIFT: f64 = 0.10;
/// Fewer samples than this (quick mode: a few seconds of churn) say nothing about a drift: the
/// RSS of shims caught mid-fetch swings by tens of percent from one second to the next.
const MIN_SAMPLES_FOR_DRIFT: usize = 20;

/// Picks one series out of the samples.
type Series = fn(&Sample) -> Option<f64>;

/// One look at the node during the churn.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cycles_done: f64,
    /// Mean RSS of the nixlet shim daemons running at that moment, KiB.
    shim_rss_kib: Option<f64>,
    agent_fds: Option<f64>,
    agent_rss_kib: Option<f64>,
}

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let cycles = ctx.runs(20, 500);
    let parallel = if ctx.quick { 4 } else { 10 };
    let gc_every = Duration::from_secs(if ctx.quick { 1 } else { 3 });
    report.method = vec![
        format!("{cycles} pod cycles (RunPodSandbox, CreateContainer, StartContainer until the app prints its environment's output, StopPodSandbox, RemovePodSandbox), {parallel} at a time, over {ENVIRONMENTS} environments fetched from a loopback cache; `nixlet gc --grace-secs 0` every {} s meanwhile, so closures, views and store trees are collected between the pods that use them; `nixlet node run` reads the shims' telemetry.", gc_every.as_secs()),
        "A cycle fails if any step fails. Every second the RSS of the nixlet shim daemons then running, and the agent's open descriptors and RSS, are sampled; their least-squares slopes over the cycles are reported, and a drift over the whole run of more than 10% of the mean counts as a failure (`flat` run) once there are at least 20 samples (quick mode has a few, and only reports them). After the churn the pods are gone: nothing may be left and no path may be invalid.".into(),
    ];
    let work = ctx.dir("churn")?;
    let set = CacheSet::build(
        &work,
        &format!("relchurn{}", std::process::id()),
        ENVIRONMENTS,
        "zstd",
    )?;
    let node = RelNode::start(
        "reliability-churn",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&node, &set, cycles, parallel, gc_every, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

fn scenario(
    node: &RelNode,
    set: &CacheSet,
    cycles: usize,
    parallel: usize,
    gc_every: Duration,
    report: &mut ScenarioReport,
) -> Result<()> {
    set.publish(node)?;
    let server = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&server.url()))?;
    let specs: Vec<(PodSpec, String)> = (0..cycles)
        .map(|i| {
            let env = &set.envs[i % ENVIRONMENTS];
            let spec = node
                .node
                .pod(&format!("churn-{i}"), NIXLET_HANDLER)
                .annotation(ENVIRONMENT, &env.reference);
            (spec, env.closure.expected_output())
        })
        .collect();
    kubelet::start_pod(node.ids(), node.node.cri(), &specs[0].0).context("the warm-up pod")?;
    let baseline = baseline(node)?;

    let clients = (0..parallel)
        .map(|_| Cri::connect(node.node.containerd_address()))
        .collect::<Result<Vec<_>>>()?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let records: Mutex<Vec<(usize, RunRecord, f64)>> = Mutex::new(Vec::new());
    let samples: Mutex<Vec<Sample>> = Mutex::new(Vec::new());
    let gc_runs = AtomicUsize::new(0);
    let gc_deleted = AtomicUsize::new(0);
    let gc_errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let ids = node.ids().clone();
    let gc = node.gc_command()?;
    let address = node.address();
    let agent = node.agent_pid();
    let started = Instant::now();
    thread::scope(|scope| {
        for cri in &clients {
            let (specs, next, done, records, ids) = (&specs, &next, &done, &records, &ids);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((spec, expected)) = specs.get(i) else {
                    return;
                };
                let t0 = Instant::now();
                let mut record = RunRecord::new("pod cycle");
                match kubelet::start_pod(ids, cri, spec) {
                    Ok(running) => {
                        if &running.output != expected {
                            record.fail(format!("cycle {i}: the app printed {:?}", running.output));
                        }
                        if let Err(e) = cri.stop_and_remove_pod(&running.pod.id) {
                            record.fail(format!("cycle {i}: removing the pod: {e:#}"));
                        }
                    }
                    Err(e) => record.fail(format!("cycle {i}: {e:#}")),
                }
                let seconds = t0.elapsed().as_secs_f64();
                done.fetch_add(1, Ordering::SeqCst);
                records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, record, seconds));
            });
        }
        let (stop_ref, gc_runs, gc_errors, gc) = (&stop, &gc_runs, &gc_errors, &gc);
        let gc_deleted = &gc_deleted;
        scope.spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) {
                match gc.run() {
                    Ok(out) => {
                        gc_deleted.fetch_add(paths_deleted(&out), Ordering::SeqCst);
                    }
                    Err(e) => gc_errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{e:#}")),
                }
                gc_runs.fetch_add(1, Ordering::SeqCst);
                sleep_unless(stop_ref, gc_every);
            }
        });
        let (stop_ref, samples, done, address) = (&stop, &samples, &done, &address);
        scope.spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) {
                let shims: Vec<f64> = procs::nixlet_daemons_of(address)
                    .into_iter()
                    .filter_map(|pid| rss_kib(pid as u32))
                    .map(|kib| kib as f64)
                    .collect();
                samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Sample {
                        cycles_done: done.load(Ordering::SeqCst) as f64,
                        shim_rss_kib: (!shims.is_empty())
                            .then(|| shims.iter().sum::<f64>() / shims.len() as f64),
                        agent_fds: agent.and_then(open_fds).map(|n| n as f64),
                        agent_rss_kib: agent.and_then(rss_kib).map(|n| n as f64),
                    });
                sleep_unless(stop_ref, Duration::from_secs(1));
            }
        });
        // The workers end when the cycles are used up; then the helpers are told to stop.
        while done.load(Ordering::SeqCst) < cycles {
            thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = started.elapsed().as_secs_f64();

    let mut records = records.into_inner().unwrap_or_else(|p| p.into_inner());
    records.sort_by_key(|(i, _, _)| *i);
    let seconds: Vec<f64> = records.iter().map(|(_, _, s)| *s).collect();
    report.runs.extend(records.into_iter().map(|(_, r, _)| r));
    let samples = samples.into_inner().unwrap_or_else(|p| p.into_inner());
    let gc_errors = gc_errors.into_inner().unwrap_or_else(|p| p.into_inner());

    let mut flat = RunRecord::new("shim RSS and agent descriptors and RSS flat");
    report.figure("cycles", cycles as f64, "cycles");
    report.figure("wall time", elapsed, "s");
    report.figure(
        "median cycle (start to removed)",
        median(&seconds).unwrap_or_default(),
        "s",
    );
    report.figure(
        "nixlet gc runs during the churn",
        gc_runs.load(Ordering::SeqCst) as f64,
        "runs",
    );
    for e in &gc_errors {
        flat.fail(format!("nixlet gc failed during the churn: {e}"));
    }
    let series: [(&str, &str, Series); 3] = [
        ("nixlet shim RSS (mean of running shims)", "KiB", |s| {
            s.shim_rss_kib
        }),
        ("agent open descriptors", "fds", |s| s.agent_fds),
        ("agent RSS", "KiB", |s| s.agent_rss_kib),
    ];
    for (name, unit, get) in series {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|s| Some((s.cycles_done, get(s)?)))
            .collect();
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        let (Some(mean), Some(slope)) = (
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
            slope(&points),
        ) else {
            flat.note(format!("{name}: too few samples for a slope"));
            continue;
        };
        report.figure(format!("{name}: mean"), mean, unit);
        report.figure(format!("{name}: slope per 100 cycles"), slope * 100.0, unit);
        let drift = slope * cycles as f64;
        flat.note(format!(
            "{name}: {:+.1} {unit} over the run ({:+.1}% of the mean)",
            drift,
            drift / mean * 100.0
        ));
        if values.len() < MIN_SAMPLES_FOR_DRIFT {
            flat.note(format!(
                "{name}: {} samples, too few to judge a drift (at least {MIN_SAMPLES_FOR_DRIFT}; \
                 the full run has one a second)",
                values.len()
            ));
        } else if drift > FLAT_DRIFT * mean {
            flat.fail(format!(
                "{name} grew by more than {:.0}% over the run",
                FLAT_DRIFT * 100.0
            ));
        }
    }
    close_run(node, &set.installed_paths(), &baseline, &mut flat);
    report.runs.push(flat);
    let failed = report.runs.iter().filter(|r| !r.ok).count();
    report.findings.push(format!(
        "{cycles} cycles in {elapsed:.0} s with {} `nixlet gc` runs in between, which deleted {} store paths that later pods fetched again: {failed} failed run(s).",
        gc_runs.load(Ordering::SeqCst),
        gc_deleted.load(Ordering::SeqCst)
    ));
    Ok(())
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(100));
    }
}
