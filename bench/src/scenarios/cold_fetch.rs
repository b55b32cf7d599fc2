//! Scenario 1: Cold materialization: nixlet's `Fetcher` vs `nix-store -r` (Nix 2.8), fetching the
//! same closure from the same loopback binary cache into the same store, the closure deleted before
//! every run. Runs alternate which tool goes first, so neither always meets a warmer machine.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use nixlet_manifest::StorePath;
use nixlet_store::{FetchOptions, Fetcher, SubstituterConfig};

use super::Context;
use crate::cpu_time::CpuTime;
use crate::data_closure::{DataClosure, DataSpec, Kind, COMPRESSIONS};
use crate::file_server::FileServer;
use crate::nix_cli;
use crate::results::{Figure, ScenarioReport};
use crate::settle::settle_after_delete;

const NAME: &str = "cold-fetch";
const MB: f64 = 1_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Nix,
    Nixlet,
}

pub fn run(ctx: &Context) -> Result<ScenarioReport> {
    let specs: &[DataSpec] = if ctx.quick {
        &[DataSpec {
            count: 4,
            bytes_per_path: 300_000,
            kind: Kind::Data,
        }]
    } else {
        &[
            DataSpec {
                count: 10,
                bytes_per_path: 10_000_000,
                kind: Kind::Data,
            },
            DataSpec {
                count: 500,
                bytes_per_path: 600_000,
                kind: Kind::Data,
            },
        ]
    };
    let (warmup, iterations) = ctx.runs(1, 5);
    let mut report = ScenarioReport::new(
        NAME,
        "Cold materialization: nixlet's fetcher vs `nix-store -r` (Nix 2.8)",
        ctx.quick,
        warmup,
        iterations,
    );
    report.method = vec![
        "Both fetch the same closure from the same signed binary cache, served on 127.0.0.1 by the bench's keep-alive file server, into the host's /nix/store; the closure is deleted with `nix-store --delete` before every run, then dirty data is synced, the kernel's caches are dropped and the cache's files read back: on this machine's journal-less ext4, creating inodes right after deleting tens of thousands is quadratic (ext4 skips recently deleted inodes one lookup at a time), which had been 60% of both tools' CPU time and is not what a node fetching a new closure sees.".into(),
        "Nix: `nix-store -r ROOT --option substituters http://127.0.0.1:PORT --option trusted-public-keys KEY` with an empty narinfo disk cache. nixlet: `Fetcher::new` + `fetch_closure` (default options: 8 parallel downloads, signatures required), in the bench process.".into(),
        "CPU time: nix-store's from the kernel's accounting of waited-for children, nixlet's from the bench process (which also serves the cache, with sendfile). CPU time close to cores × wall time means the fetch was bound by the CPU.".into(),
        format!("The last configuration of each closure serves zstd with a {} ms delay before every answer (`FileServer::start_with_latency`): a cache one network round trip away instead of on loopback. Only latency is modelled, not bandwidth.", REMOTE_LATENCY.as_millis()),
        "Closures are generated (a binary tree of references; per path a third /dev/urandom bytes, a third hex text, a third numbers in 8 KiB files) and cached under target/nixlet-bench/closures/.".into(),
    ];
    let runtime = tokio::runtime::Runtime::new()?;
    for spec in specs {
        let closure = DataClosure::obtain(&ctx.work, *spec)?;
        for (compression, latency) in links() {
            let size = &closure.caches[compression];
            let mut label = format!(
                "{} paths, {} MB NAR, {compression} ({} MB)",
                closure.paths.len(),
                megabytes(size.nar_bytes),
                megabytes(size.file_bytes)
            );
            if !latency.is_zero() {
                label.push_str(&format!(", {} ms per request", latency.as_millis()));
            }
            eprintln!("nixlet-bench: {NAME}: {label}");
            let server = FileServer::start_with_latency(&closure.cache_dir(compression), latency)?;
            let mut times = [Vec::new(), Vec::new()];
            let mut cpu = [Vec::new(), Vec::new()];
            for i in 0..warmup + iterations {
                let order = if i % 2 == 0 {
                    [Tool::Nix, Tool::Nixlet]
                } else {
                    [Tool::Nixlet, Tool::Nix]
                };
                for tool in order {
                    let (elapsed, cpu_seconds) = fetch_once(&runtime, tool, &closure, &server)?;
                    if i >= warmup {
                        times[tool as usize].push(elapsed.as_secs_f64());
                        cpu[tool as usize].push(cpu_seconds);
                    }
                }
            }
            let [nix, nixlet] = times;
            report.ratios.push(Figure::ratio(
                format!("nix-store -r / nixlet, {label}"),
                &nix,
                &nixlet,
            ));
            report
                .figures
                .push(Figure::new(format!("nix-store -r, {label}"), "s", nix));
            report
                .figures
                .push(Figure::new(format!("nixlet fetcher, {label}"), "s", nixlet));
            let [nix_cpu, nixlet_cpu] = cpu;
            report.figures.push(Figure::new(
                format!("nix-store -r CPU time, {label}"),
                "s",
                nix_cpu,
            ));
            report.figures.push(Figure::new(
                format!("nixlet fetcher CPU time, {label}"),
                "s",
                nixlet_cpu,
            ));
        }
        nix_cli::delete(&closure.paths)?;
    }
    report.findings = findings(&report);
    Ok(report)
}

/// The round trip of [`links`]' remote cache: a cache in another region or behind a CDN edge.
const REMOTE_LATENCY: Duration = Duration::from_millis(20);

/// Each compression from a cache on loopback, then zstd from a cache one round trip away. On
/// loopback both tools are bound by the CPU (decompression, hashing, creating files); a real
/// cache adds a round trip per request, which is what parallel downloads are for.
fn links() -> impl Iterator<Item = (&'static str, Duration)> {
    COMPRESSIONS
        .iter()
        .map(|c| (*c, Duration::ZERO))
        .chain([("zstd", REMOTE_LATENCY)])
}

/// Empties the store of the closure, then times one tool fetching all of it; returns the wall
/// time and the CPU time the tool used (nix-store's as a waited-for child; nixlet's as this
/// process, which also counts the file server's small share).
fn fetch_once(
    runtime: &tokio::runtime::Runtime,
    tool: Tool,
    closure: &DataClosure,
    server: &FileServer,
) -> Result<(Duration, f64)> {
    nix_cli::delete(&closure.paths)?;
    // Writeback of what the previous run wrote must not land in this one's time, nor the
    // deletion of its inodes (see `settle`).
    settle_after_delete(&[server.root()])?;
    let cache_home = tempfile::tempdir()?;
    let key = closure.public_key.clone();
    let cpu_before = CpuTime::now();
    let started = Instant::now();
    match tool {
        Tool::Nix => nix_cli::realise(&closure.root, &server.url(), &key, cache_home.path())?,
        Tool::Nixlet => {
            let substituter = SubstituterConfig {
                url: server.url(),
                trusted_keys: vec![key],
                ..Default::default()
            };
            let fetcher = Fetcher::new(vec![substituter], FetchOptions::default())?;
            let root = StorePath::parse(&closure.root)?;
            runtime
                .block_on(fetcher.fetch_closure(&[root]))
                .context("nixlet fetch")?;
        }
    }
    let elapsed = started.elapsed();
    let (own, children) = CpuTime::now().since(&cpu_before);
    let cpu = match tool {
        Tool::Nix => children,
        Tool::Nixlet => own,
    };
    let invalid = nix_cli::invalid(&closure.paths)?;
    ensure!(
        invalid.is_empty(),
        "{tool:?} left {} paths invalid",
        invalid.len()
    );
    Ok((elapsed, cpu))
}

/// Whole megabytes, or one decimal below 10 MB.
fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / MB;
    if mb < 10.0 {
        format!("{mb:.1}")
    } else {
        format!("{mb:.0}")
    }
}

pub fn findings(report: &ScenarioReport) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let median = |name: String| report.figure(&name).and_then(|f| f.median());
    let mut out = Vec::new();
    for ratio in &report.ratios {
        let Some(speedup) = ratio.median() else {
            continue;
        };
        let what = ratio.name.trim_start_matches("nix-store -r / nixlet, ");
        let verdict = if speedup >= 4.0 {
            "meets the ≥ 4× target"
        } else if speedup >= 1.0 {
            "faster than Nix but SHORT of the ≥ 4× target"
        } else {
            "nixlet is SLOWER than Nix here"
        };
        let mut line = format!("{what}: nixlet is {speedup:.2}× as fast as Nix 2.8 ({verdict}).");
        if let (Some(nix), Some(nixlet), Some(nix_cpu), Some(nixlet_cpu)) = (
            median(format!("nix-store -r, {what}")),
            median(format!("nixlet fetcher, {what}")),
            median(format!("nix-store -r CPU time, {what}")),
            median(format!("nixlet fetcher CPU time, {what}")),
        ) {
            let busy = nixlet_cpu / nixlet;
            let nix_busy = nix_cpu / nix;
            line.push_str(&format!(
                " CPU: nixlet kept {busy:.1} of {cores} cores busy and used {nixlet_cpu:.1} CPU-s; Nix kept {nix_busy:.1} busy and used {nix_cpu:.1} CPU-s."
            ));
            let cpu_per_closure = if nixlet_cpu <= nix_cpu {
                format!(
                    "{:.0}% less CPU per closure",
                    (1.0 - nixlet_cpu / nix_cpu) * 100.0
                )
            } else {
                format!(
                    "despite {:.0}% more CPU per closure",
                    (nixlet_cpu / nix_cpu - 1.0) * 100.0
                )
            };
            if let Some(loopback) =
                what.strip_suffix(&format!(", {} ms per request", REMOTE_LATENCY.as_millis()))
            {
                let paths: f64 = what
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(f64::NAN);
                let round_trips = |tool: &str, latency_run: f64| {
                    median(format!("{tool}, {loopback}")).map(|on_loopback| {
                        (latency_run - on_loopback) / paths / REMOTE_LATENCY.as_secs_f64()
                    })
                };
                if let (Some(nix_trips), Some(nixlet_trips)) = (
                    round_trips("nix-store -r", nix),
                    round_trips("nixlet fetcher", nixlet),
                ) {
                    line.push_str(&format!(
                        " Against the same cache on loopback, the round trips added {nix_trips:.2} latencies per path to Nix's time and {nixlet_trips:.2} to nixlet's: Nix 2.8 waits for its requests one after another, nixlet keeps up to 8 in flight."
                    ));
                }
            } else if speedup < 4.0 && busy >= 0.8 * cores as f64 {
                line.push_str(&format!(
                    " So nixlet is CPU-bound here: its lead comes from running on all cores where Nix 2.8 used about {nix_busy:.0} ({cpu_per_closure}); with {cores} cores that caps it near {:.1}×. Both spend their CPU on the same work (liblzma or zstd decoding, SHA-256, the kernel creating files), so ≥ 4× needs at least 4 cores, not a leaner client.",
                    cores as f64 * nix_cpu / nixlet_cpu / nix_busy.max(0.1)
                ));
            } else if speedup < 4.0 {
                line.push_str(" nixlet leaves cores idle, so its time goes to waiting (disk writes, the Nix database, dependency order), not to computing.");
            }
        }
        out.push(line);
    }
    out
}
