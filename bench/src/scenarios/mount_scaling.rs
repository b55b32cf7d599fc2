//! Scenario 4: Mount scaling: warm starts through the nixlet handler with closures of 10, 100, 1000
//! and 3000 tiny paths, each bind-mounted on its own. The cost per path is the slope of start time
//! over path count (least squares), fitted per iteration so it too has a median, min and max. The
//! same closures as plain CRI bind mounts into a runc container (busybox image) give the part of
//! that cost that runc and containerd pay for any bind mount, whoever asks for it.

use anyhow::Result;
use nixlet_e2e::containerd_config::{NIXLET_HANDLER, RUNC_HANDLER};
use nixlet_e2e::images::{BUSYBOX_IMAGE, EMPTY_IMAGE};
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::Context;
use crate::bench_node::{self, ENVIRONMENT};
use crate::mount_closure::MountClosure;
use crate::pod_start::{app_container, millis, start_container, start_pod};
use crate::results::{Figure, ScenarioReport};
use crate::shim_log;
use crate::stats::linear_fit;

const NAME: &str = "mount-scaling";
const SLOPE: &str = "nixlet: start time per mounted path";
const OWN_SLOPE: &str = "nixlet shim's own Create work per path";
const RUNC_SLOPE: &str = "runc + CRI mounts: start time per mounted path";

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let counts: &[usize] = if ctx.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000, 3000]
    };
    let (warmup, iterations) = ctx.runs(1, 7);
    let mut report = ScenarioReport::new(
        NAME,
        "Mount scaling: warm nixlet pod start vs closure size in paths",
        ctx.quick,
        warmup,
        iterations,
    );
    report.method = vec![
        format!("Closures of {counts:?} paths (a root holding busybox plus tiny paths it refers to), already in /nix/store; nixlet mounts them as its node config says (default: the environment's store tree, one read-only bind on /nix/store, built by the warm-up run; `[mounts] strategy = \"per-path\"`: one bind per path)."),
        "Same measurement as warm-start (RunPodSandbox to first output line, fresh pod each run); sizes are interleaved within each iteration. The per-path cost is the least-squares slope of time over path count, fitted per iteration.".into(),
        "Baseline: the runc handler on the busybox image with the same store paths as CRI read-only bind mounts (what a pod spec's hostPath volumes would do): the cost of the mounts themselves in containerd and runc.".into(),
    ];
    eprintln!("nixlet-bench: {NAME}: building closures of {counts:?} paths (kept as GC roots)");
    let closures = counts
        .iter()
        .map(|count| MountClosure::obtain(&ctx.work, *count))
        .collect::<Result<Vec<_>>>()?;
    let node = bench_node::start("bench-mount-scaling")?;
    let outcome = measure(&node, &closures, warmup, iterations);
    let log = node.containerd_log();
    bench_node::finish(node, NAME);
    let own: Vec<Vec<f64>> = closures
        .iter()
        .map(|c| {
            shim_log::last(
                shim_log::prepare_ms(&log, &format!("bench/m{}", c.count)),
                iterations,
            )
        })
        .collect();
    let [nixlet, runc] = outcome?;
    for (closure, samples) in closures.iter().zip(&nixlet) {
        report.figures.push(Figure::new(
            format!("nixlet warm start, {} paths", closure.count),
            "ms",
            samples.clone(),
        ));
    }
    for (closure, samples) in closures.iter().zip(&runc) {
        report.figures.push(Figure::new(
            format!("runc warm start, {} CRI bind mounts", closure.count),
            "ms",
            samples.clone(),
        ));
    }
    for (closure, samples) in closures.iter().zip(&own) {
        report.figures.push(Figure::new(
            format!("nixlet shim's own Create work, {} paths", closure.count),
            "ms",
            samples.clone(),
        ));
    }
    let own_iterations = own.iter().map(Vec::len).min().unwrap_or(0);
    report.figures.push(Figure::new(
        OWN_SLOPE,
        "µs/path",
        slopes(&closures, &own, own_iterations),
    ));
    let nixlet_slopes = slopes(&closures, &nixlet, iterations);
    let runc_slopes = slopes(&closures, &runc, iterations);
    let extra: Vec<f64> = nixlet_slopes
        .iter()
        .zip(&runc_slopes)
        .map(|(n, r)| n - r)
        .collect();
    report
        .figures
        .push(Figure::new(SLOPE, "µs/path", nixlet_slopes));
    report
        .figures
        .push(Figure::new(RUNC_SLOPE, "µs/path", runc_slopes));
    report.figures.push(Figure::new(
        "nixlet minus runc + CRI mounts, per path",
        "µs/path",
        extra,
    ));
    report.findings = findings(&report);
    Ok(report)
}

/// Per iteration, the least-squares slope of start time over path count, in µs per path.
fn slopes(closures: &[MountClosure], times: &[Vec<f64>], iterations: usize) -> Vec<f64> {
    (0..iterations)
        .filter_map(|i| {
            let points: Vec<(f64, f64)> = closures
                .iter()
                .zip(times)
                .map(|(c, t)| (c.count as f64, t[i]))
                .collect();
            linear_fit(&points).map(|(slope, _)| slope * 1000.0)
        })
        .collect()
}

/// Start times in ms, [nixlet, runc + CRI mounts], per closure, per measured iteration.
fn measure(
    node: &TestNode,
    closures: &[MountClosure],
    warmup: usize,
    iterations: usize,
) -> Result<[Vec<Vec<f64>>; 2]> {
    for closure in closures {
        let reference = format!("bench/m{}", closure.count);
        node.publish(&reference, 1, &manifest(&[("app", &closure.root)], &[]))?;
    }
    let cri = node.cri();
    let mut nixlet = vec![Vec::new(); closures.len()];
    let mut runc = vec![Vec::new(); closures.len()];
    for i in 0..warmup + iterations {
        for (slot, closure) in closures.iter().enumerate() {
            let reference = format!("bench/m{}", closure.count);
            let pod = node
                .pod(&format!("mounts-{}", closure.count), NIXLET_HANDLER)
                .annotation(ENVIRONMENT, &reference);
            let started = start_pod(cri, &pod, EMPTY_IMAGE)?;
            cri.stop_and_remove_pod(&started.pod.id)?;
            let mut container = app_container(BUSYBOX_IMAGE);
            for path in &closure.paths {
                container = container.mount_ro(path, path);
            }
            let pod = node.pod(&format!("runc-mounts-{}", closure.count), RUNC_HANDLER);
            let baseline = start_container(cri, &pod, &container, || Ok(()))?;
            cri.stop_and_remove_pod(&baseline.pod.id)?;
            if i >= warmup {
                nixlet[slot].push(millis(started.first_line));
                runc[slot].push(millis(baseline.first_line));
            }
        }
    }
    Ok([nixlet, runc])
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let median = |name: &str| report.figure(name).and_then(|f| f.median());
    let Some(slope) = median(SLOPE) else {
        return Vec::new();
    };
    let verdict = if slope <= 20.0 {
        "meets the ≤ 20 µs target"
    } else {
        "MISSES the ≤ 20 µs target"
    };
    let mut out = vec![format!(
        "Each mounted path adds {slope:.0} µs to a warm nixlet start (median slope; {verdict})."
    )];
    let extra = report
        .figure("nixlet minus runc + CRI mounts, per path")
        .and_then(|f| f.summary);
    if let (Some(runc), Some(extra), Some(own)) = (median(RUNC_SLOPE), extra, median(OWN_SLOPE)) {
        out.push(format!(
            "The same paths as CRI read-only bind mounts under plain runc cost {runc:.0} µs each: that is what containerd and runc pay per bind mount, and what nixlet's per-path strategy pays too. nixlet's slope minus that baseline is {:.0} µs per path (range {:.0} to {:.0} over the runs).",
            extra.median, extra.min, extra.max
        ));
        let own_verdict = if own <= 20.0 {
            "within the 20 µs target on its own"
        } else {
            "above 20 µs on its own"
        };
        out.push(format!(
            "nixlet's shim itself spends {own:.0} µs per path in Create (from its log: the environment view's bill of materials from the Nix database, the store tree check, config.json): {own_verdict}."
        ));
    }
    out
}
