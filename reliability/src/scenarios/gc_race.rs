//! Garbage collection while pods start and run. Three pods run (one per environment) while
//! pods of two other environments start and go one after the other, so that each of those
//! closures is garbage between its pods and is being fetched again while the collectors look
//! at it. Two collectors loop over the same store: `nixlet gc --grace-secs 0` (nixlet's own,
//! which deletes every unrooted path it installed) and the host Nix's `nix-store --delete` of
//! each of the test's paths, views included (what `nix-collect-garbage` would do to them,
//! without collecting the rest of the machine's store). No path of a running or starting
//! container may go: every start must give the environment's output, every running container
//! must keep answering exec, and its closure and view must stay in the store.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::{Cri, PodSpec};
use nixlet_e2e::http_server::HttpServer;
use nixlet_e2e::store_paths::try_delete;

use super::closing::{baseline, close_run};
use super::Context;
use crate::kubelet::{self, Running};
use crate::rel_node::{paths_deleted, NodeOptions, RelNode};
use crate::remote_envs::{CacheSet, RemoteEnv};
use crate::results::{RunRecord, ScenarioReport};

const ENVIRONMENT: &str = "nixlet.dev/environment";
/// Environments with a pod running throughout.
const RUNNING: usize = 3;
/// Environments whose pods start and go.
const STARTING: usize = 2;

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let starts = ctx.runs(6, 60);
    report.method = vec![
        format!("{} environments fetched from a loopback cache: one pod of each of {RUNNING} runs throughout, while {starts} pods of the other {STARTING} start (until their app prints the environment's output) and are removed, one after the other, so that their closures are garbage between pods and fetched again under the collectors.", RUNNING + STARTING),
        "Meanwhile, in a loop each: `nixlet gc --grace-secs 0` every 2 s (collects every unrooted path nixlet installed on the node, and unused store trees), and, every 0.2 s, the host Nix's `nix-store --delete` of each of the test's paths, views included (Nix's own collector, which honours roots and the GC lock, limited to the test's paths so the machine's store is left alone). What each deleted is counted: the starting environments' paths do go between their pods.".into(),
        "A start behaves if the app prints its environment's output. Every 2 s each running pod must answer exec (`fetched-tool`, which reads the data path with the closure's busybox) and its closure and view must be in the store; a running pod's run fails at the first miss.".into(),
    ];
    let work = ctx.dir("gc-race")?;
    let set = CacheSet::build(
        &work,
        &format!("relgc{}", std::process::id()),
        RUNNING + STARTING,
        "zstd",
    )?;
    let node = RelNode::start(
        "reliability-gc-race",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&node, &set, starts, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

fn pod(node: &RelNode, name: &str, env: &RemoteEnv) -> PodSpec {
    node.node
        .pod(name, NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference)
}

fn scenario(
    node: &RelNode,
    set: &CacheSet,
    starts: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    set.publish(node)?;
    let server = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&server.url()))?;
    let ids = node.ids().clone();
    let cri = node.node.cri();
    for (i, env) in set.envs.iter().enumerate() {
        kubelet::start_pod(&ids, cri, &pod(node, &format!("warm-up-{i}"), env))
            .context("a warm-up pod")?;
    }
    // Views are content-addressed: the warm-up's are the ones every later start installs.
    let views: Vec<Vec<String>> = set.envs.iter().map(RemoteEnv::views).collect();
    let mut targets = set.closure_paths();
    targets.extend(views.iter().flatten().cloned());
    let baseline = baseline(node)?;

    let mut running: Vec<(Running, &RemoteEnv, Vec<String>, RunRecord)> = Vec::new();
    for (i, env) in set.envs.iter().enumerate().take(RUNNING) {
        let started = kubelet::start_pod(&ids, cri, &pod(node, &format!("runs-{i}"), env))?;
        let mut needed = env.closure.paths();
        needed.extend(views[i].iter().cloned());
        running.push((
            started,
            env,
            needed,
            RunRecord::new("running pod kept its closure"),
        ));
    }
    let specs: Vec<(PodSpec, String)> = (0..starts)
        .map(|i| {
            let env = &set.envs[RUNNING + i % STARTING];
            (
                pod(node, &format!("starts-{i}"), env),
                env.closure.expected_output(),
            )
        })
        .collect();
    let starter = Cri::connect(node.node.containerd_address())?;
    let gc = node.gc_command()?;
    let stop = AtomicBool::new(false);
    let (nixlet_runs, nixlet_deleted, nix_deleted, nix_runs) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let gc_errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let start_records: Mutex<Vec<RunRecord>> = Mutex::new(Vec::new());
    let started_at = Instant::now();
    let mut checks = 0;
    thread::scope(|scope| {
        let (stop_ref, ids) = (&stop, &ids);
        let (specs, starter, start_records) = (&specs, &starter, &start_records);
        let starts_done = scope.spawn(move || {
            for (i, (spec, expected)) in specs.iter().enumerate() {
                let mut record = RunRecord::new("pod started during GC");
                match kubelet::start_pod(ids, starter, spec) {
                    Ok(up) => {
                        if &up.output != expected {
                            record.fail(format!("start {i}: the app printed {:?}", up.output));
                        }
                        if let Err(e) = starter.stop_and_remove_pod(&up.pod.id) {
                            record.fail(format!("start {i}: removing: {e:#}"));
                        }
                    }
                    Err(e) => record.fail(format!("start {i}: {e:#}")),
                }
                start_records
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(record);
            }
            stop_ref.store(true, Ordering::SeqCst);
        });
        let (gc, nixlet_runs, nixlet_deleted, gc_errors) =
            (&gc, &nixlet_runs, &nixlet_deleted, &gc_errors);
        scope.spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) {
                match gc.run() {
                    Ok(out) => {
                        nixlet_deleted.fetch_add(paths_deleted(&out), Ordering::SeqCst);
                    }
                    Err(e) => gc_errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{e:#}")),
                }
                nixlet_runs.fetch_add(1, Ordering::SeqCst);
                // Slower than Nix's loop below, so that both find paths to delete.
                thread::sleep(Duration::from_secs(2));
            }
        });
        let (targets, nix_deleted, nix_runs) = (&targets, &nix_deleted, &nix_runs);
        scope.spawn(move || {
            while !stop_ref.load(Ordering::SeqCst) {
                for path in targets {
                    // Refused for live paths ("still alive"), which is the point.
                    if Path::new(path).exists() && try_delete(path).is_ok() {
                        nix_deleted.fetch_add(1, Ordering::SeqCst);
                    }
                }
                nix_runs.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(200));
            }
        });
        while !stop.load(Ordering::SeqCst) {
            checks += 1;
            for (up, env, needed, record) in running.iter_mut() {
                if !record.ok {
                    continue;
                }
                check_running(cri, up, env, needed, record);
            }
            thread::sleep(Duration::from_secs(2));
        }
        let _ = starts_done.join();
    });
    for (up, env, needed, record) in running.iter_mut() {
        if record.ok {
            check_running(cri, up, env, needed, record);
        }
        record.note(format!("intact through {checks} checks"));
    }
    let elapsed = started_at.elapsed().as_secs_f64();
    report.runs.extend(
        start_records
            .into_inner()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let mut last = running
        .pop()
        .map(|r| r.3)
        .unwrap_or_else(|| RunRecord::new("none"));
    report.runs.extend(running.into_iter().map(|r| r.3));
    for e in gc_errors.into_inner().unwrap_or_else(|p| p.into_inner()) {
        last.fail(format!("nixlet gc failed: {e}"));
    }
    close_run(node, &set.installed_paths(), &baseline, &mut last);
    report.runs.push(last);
    let (nixlet_runs, nixlet_deleted, nix_runs, nix_deleted) = (
        nixlet_runs.load(Ordering::SeqCst),
        nixlet_deleted.load(Ordering::SeqCst),
        nix_runs.load(Ordering::SeqCst),
        nix_deleted.load(Ordering::SeqCst),
    );
    report.figure("nixlet gc runs", nixlet_runs as f64, "runs");
    report.figure("paths nixlet gc deleted", nixlet_deleted as f64, "paths");
    report.figure(
        "nix-store --delete rounds over the test's paths",
        nix_runs as f64,
        "rounds",
    );
    report.figure("paths Nix deleted", nix_deleted as f64, "paths");
    let mut collected = RunRecord::new("the collectors deleted garbage");
    if nixlet_deleted + nix_deleted == 0 {
        collected.fail("neither collector deleted anything: the race was not run");
    }
    collected.note(format!(
        "nixlet gc deleted {nixlet_deleted} paths, Nix {nix_deleted}"
    ));
    report.runs.push(collected);
    report.findings.push(format!(
        "{starts} pods started in {elapsed:.0} s under {nixlet_runs} `nixlet gc` runs and {nix_runs} rounds of `nix-store --delete`, which deleted {nixlet_deleted} and {nix_deleted} store paths of the starting environments between their pods; {}.",
        if report.failures() == 0 {
            "no running or starting container lost a path".to_owned()
        } else {
            format!("{} failed run(s)", report.failures())
        }
    ));
    Ok(())
}

fn check_running(
    cri: &Cri,
    up: &Running,
    env: &RemoteEnv,
    needed: &[String],
    record: &mut RunRecord,
) {
    for path in needed {
        if !Path::new(path).exists() {
            record.fail(format!(
                "{path}, needed by running container {}, is gone",
                up.container
            ));
        }
    }
    match cri.exec_sync(&up.container, &["fetched-tool"]) {
        Ok(exec) if exec.exit_code == 0 && exec.stdout == env.closure.expected_output() => {}
        Ok(exec) => record.fail(format!(
            "exec in {} answered {} {:?} {:?}",
            up.container, exec.exit_code, exec.stdout, exec.stderr
        )),
        Err(e) => record.fail(format!("exec in {}: {e:#}", up.container)),
    }
}
