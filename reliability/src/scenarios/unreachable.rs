//! Every substituter unreachable while the closures are on the node: a cache that refuses
//! connections, one that accepts and never answers, one whose name does not resolve. A warm
//! Create asks no cache, so pods must start as fast as on a node without substituters; the
//! ratio is measured in the same run, the configurations taking turns.

use std::net::TcpListener;
use std::time::Instant;

use anyhow::{Context as _, Result};
use nixlet_e2e::binary_cache::{unique_tag, RemoteClosure, SigningKey};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::http_server::{Fault, HttpServer, Match};

use super::closing::close_run_warm;
use super::Context;
use crate::kubelet;
use crate::rel_node::{NodeOptions, RelNode};
use crate::remote_envs::RemoteEnv;
use crate::results::{RunRecord, ScenarioReport};
use crate::slope::median;

const ENVIRONMENT: &str = "nixlet.dev/environment";
/// A start with unreachable substituters may take this much longer than the median without.
const ALLOWED_FACTOR: f64 = 2.0;
const ALLOWED_EXTRA_MS: f64 = 1000.0;

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let runs = ctx.runs(2, 10);
    report.method = vec![
        format!("One environment whose closure is valid in the node's store (built there by Nix); its view is built by a first pod. Then {runs} pod start(s) per configuration, the configurations taking turns: no substituter; one that refuses connections (a loopback port nobody listens on); one that accepts and never answers; one whose host name does not resolve (`.invalid`)."),
        format!("Measured: RunPodSandbox until the app printed its output. A start behaves if it succeeds and takes at most max({ALLOWED_FACTOR}× the median without substituters, that median + {} s); the ratio of medians to the median without substituters is reported.", ALLOWED_EXTRA_MS / 1000.0),
    ];
    let work = ctx.dir("unreachable")?;
    let closure = RemoteClosure::build(&work, &unique_tag("relwarm"))?;
    let env = RemoteEnv {
        reference: format!("relwarm{}/env", std::process::id()),
        closure,
    };
    let node = RelNode::start(
        "reliability-unreachable",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&node, &env, &work, runs, report);
    report.teardown_leaks.extend(node.finish());
    if let Err(e) = nixlet_e2e::store_paths::delete_paths(&env.views())
        .and_then(|()| env.closure.remove_from_host())
        .and_then(|()| nixlet_e2e::store_paths::delete_paths(&env.closure.derivations))
    {
        report.teardown_leaks.push(format!("{e:#}"));
    }
    outcome
}

fn scenario(
    node: &RelNode,
    env: &RemoteEnv,
    work: &std::path::Path,
    runs: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    node.node.publish(&env.reference, 1, &env.manifest())?;
    node.add_marker(&env.closure.tag);
    node.add_marker(&env.reference.replace('/', "-"));
    let key = SigningKey::generate(&work.join("keys"), &unique_tag("relwarm"))?;
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let stalled = HttpServer::start(work)?;
    stalled.fail(Match::Any, Fault::Stall, None);
    let configs: Vec<(&str, String)> = vec![
        ("no substituter", String::new()),
        ("connection refused", format!("http://127.0.0.1:{refused}")),
        ("accepts, never answers", stalled.url()),
        (
            "name does not resolve",
            "http://nixlet-unreachable.invalid".to_owned(),
        ),
    ];
    let cri = node.node.cri();
    let first = node
        .node
        .pod("warm-up", NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference);
    kubelet::start_pod(node.ids(), cri, &first).context("the warm-up pod")?;
    if let Some(problem) = node.remove_all_pods().failed.into_iter().next() {
        anyhow::bail!("removing the warm-up pod: {problem}");
    }
    let baseline = node.settled_census();
    let paths: Vec<String> = env.closure.paths().into_iter().chain(env.views()).collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut records: Vec<Vec<RunRecord>> = vec![Vec::new(); configs.len()];
    for i in 0..runs {
        for (c, (name, url)) in configs.iter().enumerate() {
            eprintln!("unreachable: {name} ({}/{runs})", i + 1);
            let toml = if url.is_empty() {
                String::new()
            } else {
                format!(
                    "[[substituters]]\nurl = \"{url}\"\ntrusted_keys = [\"{}\"]\n",
                    key.public
                )
            };
            node.set_substituters(&toml)?;
            let mut record = RunRecord::new(*name);
            let spec = node
                .node
                .pod("warm-start", NIXLET_HANDLER)
                .annotation(ENVIRONMENT, &env.reference);
            let t0 = Instant::now();
            match kubelet::start_pod(node.ids(), cri, &spec) {
                Ok(up) => {
                    let ms = t0.elapsed().as_secs_f64() * 1000.0;
                    times[c].push(ms);
                    record.wait_ms = Some(ms);
                    if up.output != env.closure.expected_output() {
                        record.fail(format!("the app printed {:?}", up.output));
                    }
                }
                Err(e) => record.fail(format!("{e:#}")),
            }
            close_run_warm(node, &paths, &baseline, &mut record);
            records[c].push(record);
        }
    }
    let without = median(&times[0]).context("no start without substituters succeeded")?;
    let limit = (without * ALLOWED_FACTOR).max(without + ALLOWED_EXTRA_MS);
    report.figure("pod start without substituters (median)", without, "ms");
    for (c, (name, _)) in configs.iter().enumerate() {
        for record in &mut records[c] {
            record.wait_limit_ms = (c > 0).then_some(limit);
            if let Some(ms) = record.wait_ms.filter(|ms| c > 0 && *ms > limit) {
                record.fail(format!(
                    "took {ms:.0} ms, more than the {limit:.0} ms allowed"
                ));
            }
        }
        if c > 0 {
            if let Some(with) = median(&times[c]) {
                report.figure(format!("pod start, {name} (median)"), with, "ms");
                report.figure(format!("{name} / no substituter"), with / without, "x");
            }
        }
    }
    let worst = configs
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(c, _)| median(&times[c]))
        .fold(0.0, f64::max);
    report.findings.push(format!(
        "With every substituter unreachable, warm pods started in {:.2}× the time without substituters (worst median of the three), {:.0} ms against {without:.0} ms.",
        worst / without,
        worst
    ));
    report.runs.extend(records.into_iter().flatten());
    Ok(())
}
