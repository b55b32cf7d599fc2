//! Binary cache faults, each on a cold node against a pod whose closure only the faulty cache
//! has: bursts of 5xx answers, connection resets mid-NAR, truncated and overlong bodies, a
//! server that stalls without a byte, one that trickles a byte a second, a redirect loop.
//!
//! A fault shorter than the retries must be retried away (the pod starts); one that lasts must
//! end in a clear error naming the path, after no more tries than configured and no longer than
//! the configured timeouts allow (the wait is measured); then, the cache repaired, the kubelet's
//! retry must run the pod. Never an invalid path.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::http_server::{Fault, HttpServer, Match};

use super::closing::{baseline, close_run};
use super::Context;
use crate::kubelet::{self, app};
use crate::rel_node::{NodeOptions, RelNode, LIMITS};
use crate::remote_envs::{CacheSet, RemoteEnv};
use crate::results::{RunRecord, ScenarioReport};

const ENVIRONMENT: &str = "nixlet.dev/environment";
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// What a Create spends besides the faulty downloads (the other paths, the view, the spec).
const SLACK: Duration = Duration::from_secs(3);
/// reqwest follows at most 10 redirects: 11 requests per try.
const REQUESTS_PER_REDIRECT_TRY: u32 = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Nar,
    NarInfo,
}

struct Case {
    name: &'static str,
    target: Target,
    fault: Fault,
    /// Requests it applies to; `None`: all.
    times: Option<u32>,
    /// `None`: the pod must start; else words its error must contain.
    refused_with: Option<&'static [&'static str]>,
    /// The longest one try may take under this fault.
    per_try: Duration,
    /// Requests one try makes to the faulty URL.
    requests_per_try: u32,
}

fn cases() -> Vec<Case> {
    let half = Fault::ResetAfter(0); // replaced per run with half the NAR's size
    vec![
        Case {
            name: "5xx burst of 2 on a NAR",
            target: Target::Nar,
            fault: Fault::Status(503),
            times: Some(2),
            refused_with: None,
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "5xx burst of 2 on a narinfo",
            target: Target::NarInfo,
            fault: Fault::Status(500),
            times: Some(2),
            refused_with: None,
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "5xx on every NAR request",
            target: Target::Nar,
            fault: Fault::Status(503),
            times: None,
            refused_with: Some(&["answered http 503", "gave up after"]),
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "connection reset mid-NAR, once",
            target: Target::Nar,
            fault: half.clone(),
            times: Some(1),
            refused_with: None,
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "connection reset mid-NAR, every time",
            target: Target::Nar,
            fault: half,
            times: None,
            refused_with: Some(&["gave up after"]),
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "truncated NAR body, every time",
            target: Target::Nar,
            fault: Fault::Truncate(0),
            times: None,
            refused_with: Some(&["gave up after"]),
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "overlong NAR body",
            target: Target::Nar,
            fault: Fault::Overlong(64 << 10),
            times: None,
            refused_with: Some(&[]),
            per_try: Duration::ZERO,
            requests_per_try: 1,
        },
        Case {
            name: "narinfo stalls, no byte",
            target: Target::NarInfo,
            fault: Fault::Stall,
            times: None,
            refused_with: Some(&["timed out"]),
            per_try: LIMITS.request_timeout,
            requests_per_try: 1,
        },
        Case {
            name: "NAR stalls, no byte",
            target: Target::Nar,
            fault: Fault::Stall,
            times: None,
            refused_with: Some(&["timed out"]),
            per_try: LIMITS.read_timeout,
            requests_per_try: 1,
        },
        Case {
            name: "NAR trickles a byte a second",
            target: Target::Nar,
            fault: Fault::Trickle(Duration::from_secs(1)),
            times: None,
            refused_with: Some(&["too slow"]),
            // One read window, and the chunk that ends it.
            per_try: LIMITS.read_timeout + Duration::from_secs(1),
            requests_per_try: 1,
        },
        Case {
            name: "NAR redirect loop",
            target: Target::Nar,
            fault: Fault::RedirectLoop,
            times: None,
            refused_with: Some(&["redirect"]),
            per_try: Duration::ZERO,
            requests_per_try: REQUESTS_PER_REDIRECT_TRY,
        },
    ]
}

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let runs = ctx.runs(1, 3);
    report.method = vec![
        format!("One node fetching from a loopback cache made by Nix that misbehaves on the busybox path of the environment (its NAR or its narinfo); the node's `[fetch]` limits: connect {} s, request {} s, read {} s, at least {} bytes/s per read window, {} tries with backoff from {} ms. {runs} run(s) per fault, each from a cold store.",
            LIMITS.connect_timeout.as_secs(), LIMITS.request_timeout.as_secs(), LIMITS.read_timeout.as_secs(), LIMITS.min_bytes_per_sec, LIMITS.attempts, crate::rel_node::FIRST_BACKOFF.as_millis()),
        "A fault that lasts fewer requests than the tries must be retried away: the pod starts. One that lasts must fail StartContainer with an error naming the path, after at most the configured tries (requests counted by the server) and within the limit: tries × the longest a try may take under that fault (0 for an immediate failure, the request timeout for a stalled narinfo, the read timeout for a stalled NAR, a read window plus a second for a trickle) + the backoffs + 3 s for the rest of the Create. Then the cache is repaired and the kubelet's retry must run the pod (recovery: from the repair until it runs).".into(),
        "After each run the pods are removed: no invalid path of the closure, nothing left compared with before.".into(),
    ];
    let work = ctx.dir("cache-faults")?;
    let set = CacheSet::build(&work, &format!("relfault{}", std::process::id()), 1, "xz")?;
    let node = RelNode::start(
        "reliability-cache-faults",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&node, &set, runs, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

fn scenario(
    node: &RelNode,
    set: &CacheSet,
    runs: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    let env = &set.envs[0];
    set.publish(node)?;
    let server = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&server.url()))?;
    kubelet::start_pod(
        node.ids(),
        node.node.cri(),
        &node
            .node
            .pod("warm-up", NIXLET_HANDLER)
            .annotation(ENVIRONMENT, &env.reference),
    )?;
    let baseline = baseline(node)?;
    set.make_cold()?;
    let cache = set.cache()?;
    let nar = cache.nar_request_path(&env.closure.busybox)?;
    let nar_size = std::fs::metadata(set.dir.join(nar.trim_start_matches('/')))?.len();
    let hash = &env.closure.busybox["/nix/store/".len().."/nix/store/".len() + 32];
    let narinfo = format!("/{hash}.narinfo");
    for case in cases() {
        for i in 0..runs {
            eprintln!("cache-faults: {} ({}/{runs})", case.name, i + 1);
            let mut record = RunRecord::new(case.name);
            let path = match case.target {
                Target::Nar => nar.clone(),
                Target::NarInfo => narinfo.clone(),
            };
            let fault = match case.fault {
                Fault::ResetAfter(0) => Fault::ResetAfter(nar_size / 2),
                Fault::Truncate(0) => Fault::Truncate(nar_size / 2),
                ref other => other.clone(),
            };
            if let Err(e) = one_run(node, env, &server, &case, &path, fault, &mut record) {
                record.fail(format!("{e:#}"));
            }
            server.clear();
            server.release();
            close_run(node, &set.installed_paths(), &baseline, &mut record);
            set.make_cold()?;
            report.runs.push(record);
        }
    }
    let worst = report
        .runs
        .iter()
        .filter_map(|r| Some(r.wait_ms? / r.wait_limit_ms?))
        .fold(0.0, f64::max);
    report.figure("longest wait of a refused Create / its limit", worst, "x");
    Ok(())
}

fn one_run(
    node: &RelNode,
    env: &RemoteEnv,
    server: &HttpServer,
    case: &Case,
    path: &str,
    fault: Fault,
    record: &mut RunRecord,
) -> Result<()> {
    let matcher = Match::Path(path.to_owned());
    let before = server.count_matching(&matcher);
    server.fail(matcher.clone(), fault, case.times);
    let spec = node
        .node
        .pod("faulty-cache", NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference);
    let cri = node.node.cri();
    let pod = cri.run_pod(&spec)?;
    node.ids().remember(&pod.id);
    let container = cri.create_container(&pod, &app(0))?;
    node.ids().remember(&container);
    let asked = Instant::now();
    let started = cri.start_container(&container);
    let waited = asked.elapsed();
    record.wait_ms = Some(waited.as_secs_f64() * 1000.0);
    let tries = server.count_matching(&matcher) - before;
    let allowed = LIMITS.attempts * case.requests_per_try;
    record.note(format!("{tries} request(s) for {path}"));
    if tries as u32 > allowed {
        record.fail(format!(
            "{tries} requests, more than the {allowed} the tries allow"
        ));
    }
    match (case.refused_with, started) {
        (None, Ok(())) => {
            let running = kubelet::wait_ready(&pod.log_directory.join(app(0).log_path()))?;
            if running != env.closure.expected_output() {
                record.fail(format!("the container printed {running:?}"));
            }
            record.note("retried away: the pod started");
        }
        (None, Err(e)) => bail!("the pod did not start although the fault was short: {e:#}"),
        (Some(_), Ok(())) => bail!("the pod started although the cache never delivered"),
        (Some(words), Err(e)) => {
            let limit = LIMITS.attempts * case.per_try + LIMITS.backoffs() + SLACK;
            record.wait_limit_ms = Some(limit.as_secs_f64() * 1000.0);
            let message = format!("{e:#}");
            let nixlet = message
                .find("nixlet:")
                .map_or(message.as_str(), |at| &message[at..]);
            record.note(format!("refused with: {nixlet}"));
            if waited > limit {
                record.fail(format!(
                    "waited {:.1} s, past the {:.1} s the limits allow",
                    waited.as_secs_f64(),
                    limit.as_secs_f64()
                ));
            }
            if !nixlet.starts_with("nixlet:") || !nixlet.contains(&env.closure.busybox) {
                record.fail("the error does not start with `nixlet:` and name the path");
            }
            for word in words {
                if !nixlet.contains(word) {
                    record.fail(format!("the error does not say {word:?}"));
                }
            }
            server.clear();
            server.release();
            let repaired = Instant::now();
            let running = kubelet::recover(node.ids(), cri, &spec, &pod, RECOVERY_DEADLINE)?;
            record.recovery_ms = Some(repaired.elapsed().as_secs_f64() * 1000.0);
            if running.output != env.closure.expected_output() {
                record.fail(format!(
                    "the retried container printed {:?}",
                    running.output
                ));
            }
        }
    }
    Ok(())
}
