//! The pod's nixlet shim killed with SIGKILL (the OOM killer, a panic) in each phase of Create,
//! then the kubelet's retry. Each phase is caught by observing it, without hooks in the shim:
//!
//! - resolving: the environment comes from an `http` source whose server holds the request;
//! - mid-download: the cache holds the NAR after half of its bytes;
//! - unpacking: the cache holds the NAR's last 8 bytes, when every file of the path is already
//!   in its temporary entry (download and unpack are one stream in nixlet);
//! - registering: the path was renamed into place while the test holds the Nix database's write
//!   lock, so the shim waits to register it;
//! - rewriting: the closure and the view are in the store while the test holds the store
//!   tree's build lock, so the shim waits just before it rewrites the spec;
//! - after the Create was forwarded: runc created the container and `runc start` waits at a
//!   gate (the node's OCI runtime is a script in front of runc).
//!
//! The pod's sandbox dies with its shim, so the retry is the kubelet's: a new sandbox and the
//! same container again. It must start, and once the pods are removed nothing may be left.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::Cri;
use nixlet_e2e::http_server::{Fault, HttpServer, Match};
use nixlet_e2e::store_paths::{is_valid, STORE_DIR};
use nixlet_e2e::{procs, wait};

use super::closing::{baseline, close_run};
use super::Context;
use crate::db_write_lock::DbWriteLock;
use crate::flock_hold::{waits_for_flock, FlockHold};
use crate::kubelet::{self, app};
use crate::rel_node::{NodeOptions, RelNode};
use crate::remote_envs::{CacheSet, RemoteEnv};
use crate::results::{RunRecord, ScenarioReport};
use crate::runc_gate::RuncGate;

const ENVIRONMENT: &str = "nixlet.dev/environment";
const NIX_DB: &str = "/nix/var/nix/db/db.sqlite";
/// How long a phase may take to be reached.
const REACH: Duration = Duration::from_secs(30);
/// How long the kubelet's retries may take.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolving,
    Downloading,
    Unpacking,
    Registering,
    Rewriting,
    Forwarded,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Resolving,
        Phase::Downloading,
        Phase::Unpacking,
        Phase::Registering,
        Phase::Rewriting,
        Phase::Forwarded,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Resolving => "killed while resolving the environment",
            Phase::Downloading => "killed mid-download",
            Phase::Unpacking => "killed while unpacking",
            Phase::Registering => "killed while registering",
            Phase::Rewriting => "killed before rewriting the spec",
            Phase::Forwarded => "killed after the Create was forwarded",
        }
    }
}

/// What one scenario run shares.
struct Setup<'a> {
    node: &'a RelNode,
    env: &'a RemoteEnv,
    cache: HttpServer,
    source: HttpServer,
    owner: String,
    gate: RuncGate,
    /// `nar/…` request path and NAR file size of the busybox path (the largest).
    nar: (String, u64),
    view_hash: String,
}

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let runs = ctx.runs(1, 5);
    report.method = vec![
        format!("One node, one environment (busybox, a data path, a tool reading it) fetched from a loopback binary cache made by Nix; {runs} run(s) per phase, each from a cold store."),
        "Phases are reached by observing them, not by hooks in the shim: an http environment source that holds the request (resolving); the cache holding the NAR after half its bytes (mid-download) or before its last 8 bytes with every file already in the temporary entry (unpacking); the Nix database's write lock held while the path is renamed into place (registering); the store tree's build lock held once the closure and view are installed (before the spec rewrite); `runc start` held at a gate after nixlet forwarded the Create (the node's OCI runtime is a script in front of runc).".into(),
        "Then the pod's nixlet shim is killed with SIGKILL and the test does what the kubelet does: the failed StartContainer is retried, with a new sandbox once the old one is not ready (a dead nixlet shim takes the pod's sandbox with it). A run behaves if the retry runs the container with the environment's output; recovery is from the kill until then.".into(),
        "Once the pods are removed the store must hold no invalid path of the environment, and nothing may be left compared with before (checked before `nixlet gc`, store trees after it).".into(),
    ];
    let work = ctx.dir("shim-kill")?;
    let owner = format!("relkill{}", std::process::id());
    let set = CacheSet::build(&work, &owner, 1, "xz")?;
    let node = RelNode::start(
        "reliability-shim-kill",
        NodeOptions {
            agent: true,
            ..Default::default()
        },
    )?;
    let outcome = scenario(&node, &set, &owner, &work, runs, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

fn scenario(
    node: &RelNode,
    set: &CacheSet,
    owner: &str,
    work: &Path,
    runs: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    let env = &set.envs[0];
    set.publish(node)?;
    let cache = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&cache.url()))?;
    // The same environment under another name, only in an http source (for the resolve phase).
    let http_root = work.join("http-envs");
    let source_env = http_root.join(owner).join("resolve");
    std::fs::create_dir_all(source_env.join("1"))?;
    std::fs::write(source_env.join("1/manifest.toml"), env.manifest())?;
    std::fs::write(source_env.join("current"), "1\n")?;
    let source = HttpServer::start(&http_root)?;
    node.set_extra_sources(&format!(
        "[[sources]]\nkind = \"http\"\nurl = \"{}\"\ntimeout_secs = 30\n",
        source.url()
    ))?;
    let nar_path = set.cache()?.nar_request_path(&env.closure.busybox)?;
    let nar_size = std::fs::metadata(set.dir.join(nar_path.trim_start_matches('/')))?.len();

    // A first start learns the view's path (the same for every cold start of the environment).
    let cri = node.node.cri();
    let spec = node
        .node
        .pod("warm-up", NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference);
    kubelet::start_pod(node.ids(), cri, &spec).context("the warm-up pod")?;
    let view = env
        .views()
        .into_iter()
        .next()
        .context("no view after the warm-up")?;
    let view_hash = view
        .strip_prefix(&format!("{STORE_DIR}/"))
        .and_then(|base| base.get(..32))
        .context("view path")?
        .to_owned();
    let baseline = baseline(node)?;
    set.make_cold()?;

    let setup = Setup {
        node,
        env,
        cache,
        source,
        owner: owner.to_owned(),
        gate: RuncGate::install(work)?,
        nar: (nar_path, nar_size),
        view_hash,
    };
    for phase in Phase::ALL {
        for i in 0..runs {
            eprintln!("shim-kill: {} ({}/{runs})", phase.name(), i + 1);
            let mut record = RunRecord::new(phase.name());
            if let Err(e) = one_run(&setup, phase, &mut record) {
                record.fail(format!("{e:#}"));
            }
            setup.cache.clear();
            setup.cache.release();
            setup.source.clear();
            setup.source.release();
            setup.gate.open();
            node.set_runtime_binary(None)?;
            close_run(node, &set.installed_paths(), &baseline, &mut record);
            set.make_cold()?;
            report.runs.push(record);
        }
    }
    let worst = report.longest_recovery_ms().unwrap_or_default();
    report.findings.push(format!(
        "Every phase: the kubelet's retry ran the container{}; the longest recovery took {:.1} s.",
        if report.failures() == 0 {
            ""
        } else {
            " except where the table says otherwise"
        },
        worst / 1000.0
    ));
    Ok(())
}

/// Holds whatever makes a Create stop in `phase` until dropped.
enum Pause {
    Server,
    Db { _held: DbWriteLock },
    Tree { _held: FlockHold },
    Gate,
}

fn one_run(setup: &Setup<'_>, phase: Phase, record: &mut RunRecord) -> Result<()> {
    let node = setup.node;
    let reference = match phase {
        Phase::Resolving => format!("{}/resolve", setup.owner),
        _ => setup.env.reference.clone(),
    };
    if phase == Phase::Forwarded {
        node.set_runtime_binary(Some(&setup.gate.script.display().to_string()))?;
    }
    let spec = node
        .node
        .pod(&format!("kill-{phase:?}").to_lowercase(), NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &reference);
    let cri = node.node.cri();
    let pod = cri.run_pod(&spec)?;
    node.ids().remember(&pod.id);
    let container = cri.create_container(&pod, &app(0))?;
    node.ids().remember(&container);
    let pause = arm(setup, phase)?;
    let address = node.address();
    let starter = Cri::connect(node.node.containerd_address())?;
    let (kill_at, started) = thread::scope(|scope| -> Result<_> {
        let start = scope.spawn(|| starter.start_container(&container));
        let reached = reach(setup, phase, &address, record);
        let daemons = procs::nixlet_daemons_of(&address);
        let kill_at = Instant::now();
        procs::kill_all(daemons.iter().copied());
        drop(pause);
        setup.cache.clear();
        setup.cache.release();
        setup.source.clear();
        setup.source.release();
        setup.gate.open();
        let started = start
            .join()
            .map_err(|_| anyhow::anyhow!("the StartContainer thread panicked"))?;
        reached?;
        if daemons.len() != 1 {
            bail!("expected one nixlet shim daemon for the pod, found {daemons:?}");
        }
        Ok((kill_at, started))
    })?;
    match started {
        Ok(()) => record.note("StartContainer succeeded although its shim was killed"),
        Err(e) => record.note(format!(
            "StartContainer failed: {}",
            first_line(&format!("{e:#}"))
        )),
    }
    let running = kubelet::recover(node.ids(), cri, &spec, &pod, RECOVERY_DEADLINE)?;
    record.recovery_ms = Some(kill_at.elapsed().as_secs_f64() * 1000.0);
    if running.output != setup.env.closure.expected_output() {
        record.fail(format!(
            "the retried container printed {:?}",
            running.output
        ));
    }
    Ok(())
}

fn arm(setup: &Setup<'_>, phase: Phase) -> Result<Pause> {
    let (nar, size) = (&setup.nar.0, setup.nar.1);
    Ok(match phase {
        Phase::Resolving => {
            setup.source.fail(
                Match::Suffix(format!("/{}/resolve/current", setup.owner)),
                Fault::Stall,
                None,
            );
            Pause::Server
        }
        Phase::Downloading => {
            setup
                .cache
                .fail(Match::Path(nar.clone()), Fault::HoldAfter(size / 2), None);
            Pause::Server
        }
        Phase::Unpacking => {
            setup.cache.fail(
                Match::Path(nar.clone()),
                Fault::HoldAfter(size.saturating_sub(8)),
                None,
            );
            Pause::Server
        }
        Phase::Registering => Pause::Db {
            _held: DbWriteLock::hold(Path::new(NIX_DB))?,
        },
        Phase::Rewriting => {
            let trees = setup
                .node
                .trees_dir()
                .context("the node has no trees dir")?;
            std::fs::create_dir_all(trees)?;
            let lock = trees.join(format!(".{}.lock", setup.view_hash));
            Pause::Tree {
                _held: FlockHold::exclusive(&lock)?,
            }
        }
        Phase::Forwarded => {
            setup.gate.close()?;
            Pause::Gate
        }
    })
}

/// Waits until the Create is in `phase`; notes what was seen.
fn reach(setup: &Setup<'_>, phase: Phase, address: &str, record: &mut RunRecord) -> Result<()> {
    let busybox = &setup.env.closure.busybox;
    let base = busybox.trim_start_matches(&format!("{STORE_DIR}/"));
    let temp = Path::new(STORE_DIR).join(format!(".nixlet-{base}"));
    match phase {
        Phase::Resolving => {
            setup
                .source
                .wait_held(&Match::Suffix("/resolve/current".into()), REACH)?;
            record.note("caught with the http source's answer pending");
        }
        Phase::Downloading | Phase::Unpacking => {
            let held = setup
                .cache
                .wait_held(&Match::Path(setup.nar.0.clone()), REACH)?;
            let files = wait::poll(
                "the temporary entry",
                Duration::from_secs(5),
                Duration::from_millis(20),
                || Ok(temp.exists().then(|| count_files(&temp))),
            )?;
            if phase == Phase::Unpacking {
                // The path is one file, a copy of the host's busybox: unpacking is caught once
                // all of it is in the temporary entry, only the NAR's closing bytes missing.
                let whole = std::fs::metadata(nixlet_e2e::prereq::BUSYBOX)?.len();
                let file = temp.join("bin/busybox");
                wait::poll(
                    "every byte of bin/busybox in the temporary entry",
                    Duration::from_secs(10),
                    Duration::from_millis(20),
                    || {
                        Ok(file
                            .metadata()
                            .is_ok_and(|m| m.len() == whole)
                            .then_some(()))
                    },
                )?;
                record.note(format!(
                    "caught with {} of {} NAR bytes sent and bin/busybox complete ({whole} bytes) in {}",
                    held.body_bytes,
                    setup.nar.1,
                    temp.display()
                ));
            } else {
                record.note(format!(
                    "caught with {} of {} NAR bytes sent and {files} entries in {}",
                    held.body_bytes,
                    setup.nar.1,
                    temp.display()
                ));
            }
        }
        Phase::Registering => {
            let paths = setup.env.closure.paths();
            let found = wait::poll(
                "a fetched path in place but not registered",
                REACH,
                Duration::from_millis(10),
                || {
                    Ok(paths
                        .iter()
                        .find(|p| Path::new(p).exists() && !is_valid(p))
                        .cloned())
                },
            )?;
            record.note(format!("caught with {found} in place, not registered"));
        }
        Phase::Rewriting => {
            wait::poll(
                "the shim to wait for the store tree's lock",
                REACH,
                Duration::from_millis(20),
                || {
                    Ok(procs::nixlet_daemons_of(address)
                        .into_iter()
                        .any(waits_for_flock)
                        .then_some(()))
                },
            )?;
            record.note("caught waiting for the store tree, closure and view installed");
        }
        Phase::Forwarded => {
            wait::poll(
                "runc start to reach the gate",
                REACH,
                Duration::from_millis(20),
                || Ok(setup.gate.reached().then_some(())),
            )?;
            record.note("caught with the container created by runc, `runc start` held");
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for entry in entries.flatten() {
                count += 1;
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    count
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
