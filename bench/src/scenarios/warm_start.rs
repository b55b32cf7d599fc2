//! Scenario 3: Warm pod start: a pod whose closure is already on the node, through the nixlet
//! handler, vs the plain runc handler running the same busybox from an image that holds it.
//! Measured from RunPodSandbox to the program's first output line in the CRI log; runs alternate.

use anyhow::Result;
use nixlet_e2e::containerd_config::{NIXLET_HANDLER, RUNC_HANDLER};
use nixlet_e2e::images::{BUSYBOX_IMAGE, EMPTY_IMAGE};
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::Context;
use crate::bench_node::{self, ENVIRONMENT};
use crate::mount_closure::MountClosure;
use crate::pod_start::{millis, start_pod, Started};
use crate::results::{Figure, ScenarioReport};
use crate::shim_log;

const NAME: &str = "warm-start";
/// Paths in the environment's closure: a small application's worth.
const CLOSURE_PATHS: usize = 10;

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let (warmup, iterations) = ctx.runs(3, 15);
    let mut report = ScenarioReport::new(
        NAME,
        "Warm pod start: nixlet handler (closure on the node) vs the plain runc handler",
        ctx.quick,
        warmup,
        iterations,
    );
    report.method = vec![
        format!("One private containerd 1.6 with both handlers; each run starts a fresh pod (sandbox + one container) and removes it afterwards (not timed). Both pods' sandboxes use the same local busybox pause image."),
        format!("runc: the busybox image (one layer, static busybox). nixlet: the empty image and an environment whose closure ({CLOSURE_PATHS} paths, busybox in the root's bin) is already in /nix/store."),
        "The container runs `busybox sh -c 'echo ready; exec busybox sleep 86400'`; time is from the RunPodSandbox call to the `ready` line in the CRI log file (polled every 0.5 ms).".into(),
    ];
    let closure = MountClosure::obtain(&ctx.work, CLOSURE_PATHS)?;
    let node = bench_node::start("bench-warm-start")?;
    let outcome = measure(&node, &closure, warmup, iterations, &mut report);
    bench_node::finish(node, NAME);
    outcome?;
    report.findings = findings(&report);
    Ok(report)
}

fn measure(
    node: &TestNode,
    closure: &MountClosure,
    warmup: usize,
    iterations: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    node.publish("bench/warm", 1, &manifest(&[("app", &closure.root)], &[]))?;
    let cri = node.cri();
    let mut runs: [Vec<Started>; 2] = [Vec::new(), Vec::new()];
    for i in 0..warmup + iterations {
        for nixlet in if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let started = if nixlet {
                let pod = node
                    .pod("warm-nixlet", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "bench/warm");
                start_pod(cri, &pod, EMPTY_IMAGE)?
            } else {
                start_pod(cri, &node.pod("warm-runc", RUNC_HANDLER), BUSYBOX_IMAGE)?
            };
            cri.stop_and_remove_pod(&started.pod.id)?;
            if i >= warmup {
                runs[nixlet as usize].push(started);
            }
        }
    }
    let [runc, nixlet] = runs;
    let phase = |runs: &[Started], f: fn(&Started) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let first = |s: &Started| millis(s.first_line);
    let sandbox = |s: &Started| millis(s.sandbox);
    let container = |s: &Started| millis(s.started - s.pulled);
    let output = |s: &Started| millis(s.first_line - s.started);
    for (label, runs) in [("runc", &runc), ("nixlet", &nixlet)] {
        report.figures.push(Figure::new(
            format!("{label}: to first line"),
            "ms",
            phase(runs, first),
        ));
        report.figures.push(Figure::new(
            format!("{label}: RunPodSandbox"),
            "ms",
            phase(runs, sandbox),
        ));
        report.figures.push(Figure::new(
            format!("{label}: CreateContainer + StartContainer"),
            "ms",
            phase(runs, container),
        ));
        report.figures.push(Figure::new(
            format!("{label}: StartContainer returned to first line"),
            "ms",
            phase(runs, output),
        ));
    }
    report.figures.push(Figure::new(
        "nixlet: shim's own Create work (from its log)",
        "ms",
        shim_log::last(
            shim_log::prepare_ms(&node.containerd_log(), "bench/warm"),
            iterations,
        ),
    ));
    report.ratios.push(Figure::ratio(
        "nixlet / runc, to first line",
        &phase(&nixlet, first),
        &phase(&runc, first),
    ));
    report.ratios.push(Figure::ratio(
        "nixlet / runc, RunPodSandbox",
        &phase(&nixlet, sandbox),
        &phase(&runc, sandbox),
    ));
    report.ratios.push(Figure::ratio(
        "nixlet / runc, CreateContainer + StartContainer",
        &phase(&nixlet, container),
        &phase(&runc, container),
    ));
    Ok(())
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let median = |name: &str| report.figure(name).and_then(|f| f.median());
    let (Some(ratio), Some(runc), Some(nixlet)) = (
        median("nixlet / runc, to first line"),
        median("runc: to first line"),
        median("nixlet: to first line"),
    ) else {
        return Vec::new();
    };
    let overhead = (ratio - 1.0) * 100.0;
    let verdict = if overhead <= 10.0 {
        "within the 10% target"
    } else {
        "OUTSIDE the 10% target"
    };
    let mut out = vec![format!(
        "Median to first line: nixlet {nixlet:.1} ms vs runc {runc:.1} ms, {overhead:+.1}% ({verdict})."
    )];
    if let (Some(sandbox_n), Some(sandbox_r), Some(container_n), Some(container_r), Some(own)) = (
        median("nixlet: RunPodSandbox"),
        median("runc: RunPodSandbox"),
        median("nixlet: CreateContainer + StartContainer"),
        median("runc: CreateContainer + StartContainer"),
        median("nixlet: shim's own Create work (from its log)"),
    ) {
        out.push(format!(
            "Where the difference goes (medians): RunPodSandbox {:+.1} ms (under the nixlet handler the sandbox's task is created through the nixlet shim, which starts the runc shim and waits for it to serve: one more process per pod); CreateContainer + StartContainer {:+.1} ms, of which {own:.1} ms is the nixlet shim's own Create work as it logs it (resolve the environment, check the view and its store tree, rewrite config.json) and the rest is runc performing the store mount(s) plus the extra forwarding hop.",
            sandbox_n - sandbox_r,
            container_n - container_r
        ));
    }
    out
}
