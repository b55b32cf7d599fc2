//! Scenario 5: Memory: PSS of the shim processes per pod with the nixlet handler (the nixlet shim
//! plus the runc shim it delegates to) vs the runc handler (the runc shim alone), with 1 and with N
//! pods running. PSS divides shared pages among the processes sharing them, so it shows what each
//! added pod really costs.

use std::thread::sleep;
use std::time::Duration;

use anyhow::Result;
use nixlet_e2e::containerd_config::{NIXLET_HANDLER, RUNC_HANDLER};
use nixlet_e2e::images::{BUSYBOX_IMAGE, EMPTY_IMAGE};
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::Context;
use crate::bench_node::{self, ENVIRONMENT};
use crate::mount_closure::MountClosure;
use crate::pod_start::start_pod;
use crate::pss::shims_by_binary;
use crate::results::{Figure, ScenarioReport};

const NAME: &str = "memory";
const NIXLET_SHIM: &str = "containerd-shim-nixlet-v2";
const RUNC_SHIM: &str = "containerd-shim-runc-v2";
const MIB: f64 = 1024.0;

fn pod_counts(quick: bool) -> &'static [usize] {
    if quick {
        &[1, 3]
    } else {
        &[1, 20]
    }
}

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let pod_counts = pod_counts(ctx.quick);
    // Samples are PSS readings of the same running pods, a second apart.
    let (_, samples) = ctx.runs(0, 5);
    let mut report = ScenarioReport::new(
        NAME,
        "Memory: PSS of the shims per pod, nixlet handler vs runc handler",
        ctx.quick,
        0,
        samples,
    );
    report.method = vec![
        format!("For each handler and each pod count in {pod_counts:?}: start that many pods (one sleeping busybox container each, nixlet pods on a 10-path environment), wait 2 s, then read Pss from /proc/PID/smaps_rollup of every shim of this containerd {samples} times, 1 s apart; per-pod figures are totals divided by the pod count."),
        "containerd 1.6 runs one shim per pod (sandbox and containers share it); under the nixlet handler that is the nixlet shim plus the runc shim it starts and forwards to.".into(),
    ];
    let closure = MountClosure::obtain(&ctx.work, 10)?;
    let node = bench_node::start("bench-memory")?;
    let outcome = measure(&node, &closure, pod_counts, samples, ctx.quick, &mut report);
    bench_node::finish(node, NAME);
    outcome?;
    report.findings = findings(&report);
    Ok(report)
}

fn measure(
    node: &TestNode,
    closure: &MountClosure,
    pod_counts: &[usize],
    samples: usize,
    quick: bool,
    report: &mut ScenarioReport,
) -> Result<()> {
    node.publish("bench/memory", 1, &manifest(&[("app", &closure.root)], &[]))?;
    let cri = node.cri();
    let address = node.containerd_address().display().to_string();
    for &pods in pod_counts {
        let mut per_pod_total = [Vec::new(), Vec::new()];
        for nixlet in [false, true] {
            let mut ids = Vec::new();
            for n in 0..pods {
                let started = if nixlet {
                    let pod = node
                        .pod(&format!("mem-nixlet-{n}"), NIXLET_HANDLER)
                        .annotation(ENVIRONMENT, "bench/memory");
                    start_pod(cri, &pod, EMPTY_IMAGE)?
                } else {
                    start_pod(
                        cri,
                        &node.pod(&format!("mem-runc-{n}"), RUNC_HANDLER),
                        BUSYBOX_IMAGE,
                    )?
                };
                ids.push(started.pod.id);
            }
            // Let the shims finish starting up (lazy allocations, the delegate's connection).
            sleep(if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            });
            let mut by_binary: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            for s in 0..samples {
                if s > 0 {
                    sleep(Duration::from_secs(1));
                }
                let shims = shims_by_binary(&address);
                let per_pod = |binary: &str| {
                    shims
                        .get(binary)
                        .map_or(0.0, |(_, kib)| *kib as f64 / MIB / pods as f64)
                };
                by_binary[0].push(per_pod(RUNC_SHIM));
                by_binary[1].push(per_pod(NIXLET_SHIM));
            }
            let handler = if nixlet { "nixlet" } else { "runc" };
            let total: Vec<f64> = by_binary[0]
                .iter()
                .zip(&by_binary[1])
                .map(|(a, b)| a + b)
                .collect();
            let [runc_shim, nixlet_shim] = by_binary;
            if nixlet {
                report.figures.push(Figure::new(
                    format!("{handler} handler, {pods} pod(s): {NIXLET_SHIM} per pod"),
                    "MiB",
                    nixlet_shim,
                ));
            }
            report.figures.push(Figure::new(
                format!("{handler} handler, {pods} pod(s): {RUNC_SHIM} per pod"),
                "MiB",
                runc_shim,
            ));
            report.figures.push(Figure::new(
                format!("{handler} handler, {pods} pod(s): all shims per pod"),
                "MiB",
                total.clone(),
            ));
            per_pod_total[nixlet as usize] = total;
            for id in ids {
                cri.stop_and_remove_pod(&id)?;
            }
        }
        report.ratios.push(Figure::ratio(
            format!("nixlet / runc handler, shims per pod, {pods} pod(s)"),
            &per_pod_total[1],
            &per_pod_total[0],
        ));
    }
    Ok(())
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let pod_counts = pod_counts(report.quick);
    let mut out = Vec::new();
    for pods in pod_counts {
        let median = |name: String| report.figure(&name).and_then(|f| f.median());
        let (Some(runc), Some(nixlet), Some(own)) = (
            median(format!("runc handler, {pods} pod(s): all shims per pod")),
            median(format!("nixlet handler, {pods} pod(s): all shims per pod")),
            median(format!(
                "nixlet handler, {pods} pod(s): {NIXLET_SHIM} per pod"
            )),
        ) else {
            continue;
        };
        out.push(format!(
            "{pods} pod(s): {nixlet:.1} MiB of shims per nixlet pod vs {runc:.1} MiB per runc pod; nixlet's own shim accounts for {own:.1} MiB per pod. nixlet loses here by design: it is a proxy in front of the stock runc shim, so each pod has one more process."
        ));
    }
    out
}
