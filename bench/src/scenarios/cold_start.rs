//! Scenario 2: Cold pod start: a pod whose environment's closure is nowhere on the node (nixlet's
//! Create fetches it from a loopback binary cache) vs the same program as an OCI image pulled from
//! a loopback registry (Debian's docker-registry) by CRI PullImage and run with the runc handler.
//! Measured from RunPodSandbox to the first output line; the store is emptied of the closure and
//! the image removed before every run; runs alternate.

use anyhow::Result;
use nixlet_e2e::containerd_config::{NIXLET_HANDLER, RUNC_HANDLER};
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::Context;
use crate::app_image::{AppImage, TAG};
use crate::bench_node::{self, ENVIRONMENT};
use crate::data_closure::{DataClosure, DataSpec, Kind};
use crate::file_server::FileServer;
use crate::image_service::ImageService;
use crate::nix_cli;
use crate::pod_start::{millis, start_pod, start_pod_pulling, Started};
use crate::registry::Registry;
use crate::results::{Figure, ScenarioReport};
use crate::settle::settle_after_delete;
use crate::shim_log;

const NAME: &str = "cold-start";
/// What a node's cache would most likely use: fast to decompress.
pub const COMPRESSION: &str = "zstd";
const MB: f64 = 1_000_000.0;

/// The application closure of the cold scenarios: busybox on top of ~100 MB in 10 paths.
pub fn app_spec(quick: bool) -> DataSpec {
    if quick {
        DataSpec {
            count: 4,
            bytes_per_path: 300_000,
            kind: Kind::App,
        }
    } else {
        DataSpec {
            count: 10,
            bytes_per_path: 10_000_000,
            kind: Kind::App,
        }
    }
}

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let (warmup, iterations) = ctx.runs(1, 5);
    let mut report = ScenarioReport::new(
        NAME,
        "Cold pod start: nixlet fetching the closure vs pulling the equivalent OCI image",
        ctx.quick,
        warmup,
        iterations,
    );
    let closure = DataClosure::obtain(&ctx.work, app_spec(ctx.quick))?;
    let image = AppImage::obtain(&closure)?;
    let size = &closure.caches[COMPRESSION];
    report.method = vec![
        format!("The program: busybox in the root of a closure of {} paths, {:.0} MB of NAR ({:.0} MB as {COMPRESSION} in the binary cache), generated like cold-fetch's.", closure.paths.len(), size.nar_bytes as f64 / MB, size.file_bytes as f64 / MB),
        "nixlet: the node config names the loopback binary cache (bench file server) as substituter; the closure and the environment view are deleted from /nix/store before each run, then the kernel's caches are dropped and the cache's and registry's files read back (see cold-fetch); the pod uses the empty image, so all the time is nixlet's (fetch, verify, unpack, register, view, mounts).".into(),
        "runc: the same files as an OCI image built with umoci (a busybox base layer and one layer with the closure's store paths, gzip), pushed to `docker-registry` on 127.0.0.1; the image is removed with CRI RemoveImage before each run and pulled with CRI PullImage between RunPodSandbox and CreateContainer, as the kubelet does.".into(),
    ];
    nix_cli::delete(&closure.paths)?;
    let node = bench_node::start("bench-cold-start")?;
    let outcome = measure(&node, &closure, &image, warmup, iterations, &mut report);
    bench_node::finish(node, NAME);
    outcome?;
    nix_cli::delete(&closure.paths)?;
    report.findings = findings(&report);
    Ok(report)
}

fn measure(
    node: &TestNode,
    closure: &DataClosure,
    image: &AppImage,
    warmup: usize,
    iterations: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    let registry = Registry::start()?;
    let (reference, image_bytes) = registry.push(&image.layout, TAG, "nixlet-bench/app")?;
    let server = FileServer::start(&closure.cache_dir(COMPRESSION))?;
    bench_node::set_substituter(node, &server.url(), &closure.public_key)?;
    node.publish("bench/cold", 1, &manifest(&[("app", &closure.root)], &[]))?;
    let images = ImageService::connect(node.containerd_address())?;
    let cri = node.cri();
    let cache_dir = closure.cache_dir(COMPRESSION);
    let warm = [cache_dir.as_path(), registry.storage()];
    let mut runs: [Vec<Started>; 2] = [Vec::new(), Vec::new()];
    let mut fetched = Vec::new();
    for i in 0..warmup + iterations {
        for nixlet in if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let started = if nixlet {
                nix_cli::delete(&closure.paths)?;
                settle_after_delete(&warm)?;
                server.reset();
                let pod = node
                    .pod("cold-nixlet", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, "bench/cold");
                let started = start_pod(cri, &pod, EMPTY_IMAGE)?;
                if i >= warmup {
                    fetched.push(server.body_bytes() as f64 / MB);
                }
                started
            } else {
                images.remove(&reference)?;
                settle_after_delete(&warm)?;
                let pod = node.pod("cold-runc", RUNC_HANDLER);
                start_pod_pulling(cri, &pod, &reference, || images.pull(&reference).map(drop))?
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
    let pull = |s: &Started| millis(s.pulled - s.sandbox);
    let container = |s: &Started| millis(s.started - s.pulled);
    report.figures.push(Figure::new(
        "runc + image pull: to first line",
        "ms",
        phase(&runc, first),
    ));
    report.figures.push(Figure::new(
        "runc + image pull: PullImage",
        "ms",
        phase(&runc, pull),
    ));
    report.figures.push(Figure::new(
        "runc + image pull: CreateContainer + StartContainer",
        "ms",
        phase(&runc, container),
    ));
    report.figures.push(Figure::new(
        "nixlet + fetch: to first line",
        "ms",
        phase(&nixlet, first),
    ));
    report.figures.push(Figure::new(
        "nixlet + fetch: CreateContainer + StartContainer (fetch included)",
        "ms",
        phase(&nixlet, container),
    ));
    report.figures.push(Figure::new(
        "nixlet: shim's own Create work, fetch included (from its log)",
        "ms",
        shim_log::last(
            shim_log::prepare_ms(&node.containerd_log(), "bench/cold"),
            iterations,
        ),
    ));
    report
        .figures
        .push(Figure::new("nixlet: bytes downloaded", "MB", fetched));
    report.figures.push(Figure::new(
        "OCI image: compressed layers",
        "MB",
        vec![image_bytes as f64 / MB],
    ));
    report.ratios.push(Figure::ratio(
        "runc + pull / nixlet + fetch, to first line",
        &phase(&runc, first),
        &phase(&nixlet, first),
    ));
    Ok(())
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let median = |name: &str| report.figure(name).and_then(|f| f.median());
    let (Some(ratio), Some(runc), Some(nixlet)) = (
        median("runc + pull / nixlet + fetch, to first line"),
        median("runc + image pull: to first line"),
        median("nixlet + fetch: to first line"),
    ) else {
        return Vec::new();
    };
    let verdict = if ratio >= 1.0 {
        format!("nixlet starts {ratio:.2}× as fast")
    } else {
        format!("nixlet is SLOWER ({ratio:.2}×)")
    };
    let mut out = vec![format!(
        "Median to first line: nixlet fetching the closure {nixlet:.0} ms vs pulling the image {runc:.0} ms: {verdict}."
    )];
    let spread = |name: &str| report.figure(name).and_then(|f| f.summary);
    if let (Some(n), Some(r)) = (
        spread("nixlet + fetch: to first line"),
        spread("runc + image pull: to first line"),
    ) {
        // On par: each side's fastest run beats the other side's median.
        if n.min < r.median && r.min < n.median {
            out.push(format!(
                "Runs vary more than the medians differ (nixlet {:.0}–{:.0} ms, image {:.0}–{:.0} ms): on this machine the two are on par, and the sign of the difference can change from one run of the bench to the next.",
                n.min, n.max, r.min, r.max
            ));
        }
    }
    if let (Some(pull), Some(own), Some(fetched), Some(image)) = (
        median("runc + image pull: PullImage"),
        median("nixlet: shim's own Create work, fetch included (from its log)"),
        median("nixlet: bytes downloaded"),
        median("OCI image: compressed layers"),
    ) {
        out.push(format!(
            "Nearly all of either start is moving the program onto the node: PullImage takes {pull:.0} ms for {image:.1} MB of gzip layers (download, then unpack into a snapshot), nixlet's Create {own:.0} ms for {fetched:.1} MB of zstd NARs (download, verify, unpack into /nix/store, register, build the view). Both end with the same files on disk; the bench does not split either into download, decompression and unpacking, so which of those bounds them here is not measured."
        ));
    }
    out
}
