//! Scenario 7: Disk: bytes on disk for environments that share most of their closure, in
//! nixlet's store (each path once, uncompressed, plus one small view per environment) vs
//! containerd's content store and snapshots for the equivalent images pulled from the loopback
//! registry (compressed layers kept, plus their unpacked snapshots).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result};
use nixlet_e2e::containerd_config::{ContainerdPaths, NIXLET_HANDLER};
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;

use super::cold_start::COMPRESSION;
use super::Context;
use crate::bench_node::{self, ENVIRONMENT};
use crate::data_closure::{DataClosure, DataSpec, Kind, VARIANTS};
use crate::file_server::FileServer;
use crate::image_service::ImageService;
use crate::nix_cli;
use crate::pod_start::start_pod;
use crate::registry::Registry;
use crate::results::{Figure, ScenarioReport};
use crate::variant_images::VariantImages;

const NAME: &str = "disk";
const MB: f64 = 1_000_000.0;

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let spec = if ctx.quick {
        DataSpec {
            count: 4,
            bytes_per_path: 300_000,
            kind: Kind::Variants,
        }
    } else {
        DataSpec {
            count: 10,
            bytes_per_path: 10_000_000,
            kind: Kind::Variants,
        }
    };
    let mut report = ScenarioReport::new(
        NAME,
        "Disk: environments sharing most of their closure, nixlet store vs containerd images",
        ctx.quick,
        0,
        1,
    );
    let closure = DataClosure::obtain(&ctx.work, spec)?;
    let variants: Vec<String> = closure
        .paths
        .iter()
        .filter(|p| p.contains("-variant-"))
        .cloned()
        .collect();
    let shared: Vec<String> = closure
        .paths
        .iter()
        .filter(|p| !p.contains("-variant") && **p != closure.root)
        .cloned()
        .collect();
    report.method = vec![
        format!("{VARIANTS} environments, each a root with busybox and 5 MB of its own, all referring to the same {} data paths ({:.0} MB of NAR in total for the shared part).", shared.len(), spec.count as f64 * spec.bytes_per_path as f64 / MB),
        format!("nixlet: one pod per environment on a node whose store has none of it, fetched from the {COMPRESSION} binary cache; counted: `du` of every closure path (each once) and the {VARIANTS} environment views."),
        "containerd: the images pulled with CRI PullImage from the loopback registry; layers are as shareable as images get (one busybox base layer and one shared-data layer common to all, one layer per variant); counted: growth of `du` of containerd's content store and snapshotter directories.".into(),
        "One measurement: disk use is deterministic.".into(),
    ];
    let images = VariantImages::obtain(&closure, &variants, &shared)?;
    nix_cli::delete(&closure.paths)?;
    let node = bench_node::start("bench-disk")?;
    let outcome = measure(&node, &closure, &variants, &images, &mut report);
    bench_node::finish(node, NAME);
    outcome?;
    nix_cli::delete(&closure.paths)?;
    report.findings = findings(&report);
    Ok(report)
}

fn measure(
    node: &TestNode,
    closure: &DataClosure,
    variants: &[String],
    images: &VariantImages,
    report: &mut ScenarioReport,
) -> Result<()> {
    let registry = Registry::start()?;
    let mut references = Vec::new();
    for tag in &images.tags {
        references.push(registry.push(&images.layout, tag, "nixlet-bench/variant")?);
    }
    let server = FileServer::start(&closure.cache_dir(COMPRESSION))?;
    bench_node::set_substituter(node, &server.url(), &closure.public_key)?;
    let cri = node.cri();
    let mut environment_paths: Vec<String> = Vec::new();
    for (v, root) in variants.iter().enumerate() {
        let name = format!("disk-{v}");
        node.publish(
            &format!("bench/{name}"),
            1,
            &manifest(&[("app", root)], &[]),
        )?;
        let pod = node
            .pod(&name, NIXLET_HANDLER)
            .annotation(ENVIRONMENT, &format!("bench/{name}"));
        start_pod(cri, &pod, EMPTY_IMAGE)?;
        environment_paths.extend(nix_cli::closure(root)?);
        environment_paths.push(view_of(&name)?);
    }
    environment_paths.sort();
    environment_paths.dedup();
    let nixlet = du(&environment_paths)?;

    let containerd_root = containerd_root(node)?;
    let stores: Vec<String> = [
        "io.containerd.content.v1.content",
        "io.containerd.snapshotter.v1.overlayfs",
        "io.containerd.snapshotter.v1.native",
    ]
    .iter()
    .map(|d| containerd_root.join(d))
    .filter(|d| d.exists())
    .map(|d| d.display().to_string())
    .collect();
    let before = du(&stores)?;
    let image_service = ImageService::connect(node.containerd_address())?;
    for (reference, _) in &references {
        image_service.pull(reference)?;
    }
    let containerd = du(&stores)? - before;
    let one_image = references.first().map_or(0, |(_, bytes)| *bytes);

    report.figures.push(Figure::new(
        format!("nixlet: /nix/store for {VARIANTS} environments (closures + views)"),
        "MB",
        vec![nixlet as f64 / MB],
    ));
    report.figures.push(Figure::new(
        format!("containerd: content store + snapshots for {VARIANTS} images"),
        "MB",
        vec![containerd as f64 / MB],
    ));
    report.figures.push(Figure::new(
        "one image's compressed layers",
        "MB",
        vec![one_image as f64 / MB],
    ));
    report.ratios.push(Figure::new(
        "containerd / nixlet, disk",
        "x",
        vec![containerd as f64 / nixlet as f64],
    ));
    Ok(())
}

/// The environment view nixlet built for `bench/<name>`:
/// `/nix/store/<hash>-nixlet-env-bench-<name>`.
fn view_of(name: &str) -> Result<String> {
    let suffix = format!("-nixlet-env-bench-{name}");
    std::fs::read_dir("/nix/store")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(&suffix) && !n.ends_with(".lock"))
        .map(|n| format!("/nix/store/{n}"))
        .with_context(|| format!("no environment view *{suffix} in /nix/store"))
}

fn containerd_root(node: &TestNode) -> Result<PathBuf> {
    let dir = node
        .containerd_address()
        .parent()
        .context("containerd's socket has no directory")?;
    Ok(ContainerdPaths::under(dir).root)
}

/// Bytes of disk (allocated blocks) under `paths`, hard links counted once.
fn du(paths: &[String]) -> Result<u64> {
    if paths.is_empty() {
        return Ok(0);
    }
    let out = nix_cli::run(Command::new("du").args(["-s", "-c", "-B1"]).args(paths))?;
    out.lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("du printed no total")
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let Some(ratio) = report
        .figure("containerd / nixlet, disk")
        .and_then(|f| f.median())
    else {
        return Vec::new();
    };
    let verdict = if ratio > 1.0 {
        "nixlet uses less disk (target met)"
    } else {
        "nixlet uses MORE disk (target missed)"
    };
    vec![format!(
        "containerd needs {ratio:.2}× the disk nixlet needs for the same {VARIANTS} environments: {verdict}. containerd keeps every layer twice (compressed in the content store and unpacked as a snapshot); nixlet keeps each store path once, unpacked, and adds a small view per environment. This is the best case for images (shared layers); images that each copy their application in one layer would share only the base."
    )]
}
