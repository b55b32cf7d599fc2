//! Scenario 6: Many pods at once on a cold node: N pods of one environment started together while
//! its closure is missing. Every shim fetches the same closure; Nix's per-path locks must make each
//! NAR download once. Reports bytes served vs the closure's compressed size, the most times one NAR
//! was served, and the time until every pod printed its first line.

use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Context as _, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::Cri;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::cold_start::{app_spec, COMPRESSION};
use super::Context;
use crate::bench_node::{self, ENVIRONMENT};
use crate::data_closure::DataClosure;
use crate::file_server::FileServer;
use crate::nix_cli;
use crate::pod_start::start_pod;
use crate::results::{Figure, ScenarioReport};

const NAME: &str = "many-pods";
const MB: f64 = 1_000_000.0;

fn pod_count(quick: bool) -> usize {
    if quick {
        3
    } else {
        20
    }
}

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let pods = pod_count(ctx.quick);
    let (warmup, iterations) = ctx.runs(0, 3);
    let mut report = ScenarioReport::new(
        NAME,
        "Many pods at once on a cold node: bytes downloaded vs closure size",
        ctx.quick,
        warmup,
        iterations,
    );
    let closure = DataClosure::obtain(&ctx.work, app_spec(ctx.quick))?;
    report.method = vec![format!(
        "{pods} nixlet pods of one environment (cold-start's closure: {} paths, {COMPRESSION} cache) started by {pods} threads at once, each thread a kubelet worker with its own CRI connection; the closure and its view are deleted before each run. The bench file server counts the bytes and requests it serves.",
        closure.paths.len()
    )];
    nix_cli::delete(&closure.paths)?;
    let node = bench_node::start("bench-many-pods")?;
    let outcome = measure(
        &node,
        &closure,
        pods,
        warmup + iterations,
        warmup,
        &mut report,
    );
    bench_node::finish(node, NAME);
    outcome?;
    nix_cli::delete(&closure.paths)?;
    report.findings = findings(&report);
    Ok(report)
}

fn measure(
    node: &TestNode,
    closure: &DataClosure,
    pods: usize,
    runs: usize,
    warmup: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    let server = FileServer::start(&closure.cache_dir(COMPRESSION))?;
    bench_node::set_substituter(node, &server.url(), &closure.public_key)?;
    node.publish("bench/many", 1, &manifest(&[("app", &closure.root)], &[]))?;
    let closure_mb = closure.caches[COMPRESSION].file_bytes as f64 / MB;
    let (mut all_running, mut bytes, mut ratio, mut most) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        nix_cli::delete(&closure.paths)?;
        server.reset();
        let specs: Vec<_> = (0..pods)
            .map(|n| {
                node.pod(&format!("many-{n}"), NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "bench/many")
            })
            .collect();
        let clients = (0..pods)
            .map(|_| Cri::connect(node.containerd_address()))
            .collect::<Result<Vec<_>>>()?;
        let barrier = Barrier::new(pods);
        let t0 = Instant::now();
        let outcomes: Vec<Result<_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .zip(&clients)
                .map(|(spec, cri)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        start_pod(cri, spec, EMPTY_IMAGE)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("pod thread panicked")))
                })
                .collect()
        });
        let elapsed = t0.elapsed().as_secs_f64();
        let cri = node.cri();
        let mut failure = None;
        for outcome in outcomes {
            match outcome {
                Ok(started) => cri.stop_and_remove_pod(&started.pod.id)?,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            return Err(e).context("a pod failed to start");
        }
        if i < warmup {
            continue;
        }
        let served = server.body_bytes() as f64 / MB;
        let nar_gets = server.gets_per_path();
        all_running.push(elapsed);
        bytes.push(served);
        ratio.push(served / closure_mb);
        most.push(
            nar_gets
                .iter()
                .filter(|(path, _)| path.starts_with("/nar/"))
                .map(|(_, n)| f64::from(*n))
                .fold(0.0, f64::max),
        );
    }
    report.figures.push(Figure::new(
        format!("{pods} pods: until all printed their first line"),
        "s",
        all_running,
    ));
    report.figures.push(Figure::new(
        format!("{pods} pods: bytes downloaded"),
        "MB",
        bytes,
    ));
    report.figures.push(Figure::new(
        "closure in the cache (compressed)",
        "MB",
        vec![closure_mb],
    ));
    report
        .figures
        .push(Figure::new("most downloads of one NAR", "times", most));
    report.ratios.push(Figure::new(
        format!("{pods} pods: bytes downloaded / closure size"),
        "x",
        ratio,
    ));
    Ok(())
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let pods = pod_count(report.quick);
    let median = |name: &str| report.figure(name).and_then(|f| f.median());
    let (Some(ratio), Some(most), Some(time)) = (
        median(&format!("{pods} pods: bytes downloaded / closure size")),
        report
            .figure("most downloads of one NAR")
            .and_then(|f| f.summary.map(|s| s.max)),
        median(&format!("{pods} pods: until all printed their first line")),
    ) else {
        return Vec::new();
    };
    let verdict = if most <= 1.0 {
        "each NAR was downloaded once (target met)"
    } else {
        "some NAR was downloaded more than once (target MISSED)"
    };
    vec![format!(
        "{pods} pods at once: {ratio:.2}× the closure's compressed size downloaded, {verdict}; all running after {time:.2} s."
    )]
}
