//! The e2e harness's test node as the suite uses it: a private containerd with the nixlet shim,
//! plus what makes its leftovers countable and its garbage collectable without touching the
//! rest of the host: its own GC-root directory (inside Nix's gcroots, so Nix and `nixlet gc`
//! honour it) and store-tree directory, its own install record, the node agent (`nixlet node
//! run`) reading its shims' telemetry, and a list of every pod and container id it made.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nixlet_e2e::agent::{free_port, NodeAgent};
use nixlet_e2e::binary_cache::unique_tag;
use nixlet_e2e::census::{Census, CensusScope};
use nixlet_e2e::node::{Shim, TestNode};
use nixlet_e2e::{procs, shim_build, wait};

/// A private store's Nix state directory, below the node's scratch directory.
pub const PRIVATE_NIX_STATE: &str = "nix-state";

/// A Nix state directory (database, GC lock, roots) as Nix itself makes it.
fn init_nix_state(dir: &Path) -> Result<()> {
    let out = Command::new("nix-store")
        .arg("--init")
        .env("NIX_STATE_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .context("running nix-store --init")?;
    if !out.status.success() {
        bail!(
            "nix-store --init in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Where Nix looks for GC roots; a node's own directory goes below it.
const NIX_GCROOTS: &str = "/nix/var/nix/gcroots";
/// Store trees must be on the store's filesystem (they hard-link store files).
const TREES_PARENT: &str = "/nix/var/nixlet";

/// The `[fetch]` limits every node of the suite runs with: short, so that a fault costs seconds,
/// and what each scenario's bound on a Create's wait is computed from.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub min_bytes_per_sec: u64,
    pub attempts: u32,
}

pub const LIMITS: FetchLimits = FetchLimits {
    connect_timeout: Duration::from_secs(2),
    request_timeout: Duration::from_secs(3),
    read_timeout: Duration::from_secs(3),
    min_bytes_per_sec: 1024,
    attempts: 3,
};

/// nixlet's backoff before the second try, doubled before each further one (not configurable).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

impl FetchLimits {
    fn toml(&self) -> String {
        format!(
            "[fetch]\nconnect_timeout_secs = {}\nrequest_timeout_secs = {}\nread_timeout_secs = {}\n\
             min_bytes_per_sec = {}\nattempts = {}\n",
            self.connect_timeout.as_secs(),
            self.request_timeout.as_secs(),
            self.read_timeout.as_secs(),
            self.min_bytes_per_sec,
            self.attempts
        )
    }

    /// Total backoff between `attempts` tries.
    pub fn backoffs(&self) -> Duration {
        (1..self.attempts)
            .map(|n| FIRST_BACKOFF * 2u32.pow(n - 1))
            .sum()
    }
}

/// Every pod and container id a node made, shared with the threads that make them.
#[derive(Debug, Clone, Default)]
pub struct Ids(Arc<Mutex<BTreeSet<String>>>);

impl Ids {
    /// Remembers a pod or container id, whose shim socket the census looks for.
    pub fn remember(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
    }

    pub fn all(&self) -> BTreeSet<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How often the pods' removal is tried (a second apart) before it counts as failed.
const REMOVAL_ROUNDS: usize = 10;

/// What removing a node's pods ran into.
#[derive(Debug, Default)]
pub struct Removal {
    /// Still failing after the last round.
    pub failed: Vec<String>,
    /// Failed in an earlier round, then went.
    pub retried: Vec<String>,
}

/// `nixlet gc --grace-secs 0` for one node.
#[derive(Debug, Clone)]
pub struct GcCommand {
    cli: PathBuf,
    config: PathBuf,
}

/// Store paths a `nixlet gc` report says it deleted.
pub fn paths_deleted(report: &str) -> usize {
    report
        .lines()
        .filter(|l| l.starts_with("deleted /nix/store/"))
        .count()
}

impl GcCommand {
    pub fn run(&self) -> Result<String> {
        let out = Command::new(&self.cli)
            .args(["gc", "--grace-secs", "0"])
            .env("NIXLET_CONFIG", &self.config)
            .env("NIXLET_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .context("running nixlet gc")?;
        if !out.status.success() {
            bail!(
                "nixlet gc failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Given the scratch directory, the argv prefix containerd is started through.
pub type Wrapper = Box<dyn FnOnce(&Path) -> Vec<String>>;

/// How a node differs from the default one.
#[derive(Default)]
pub struct NodeOptions {
    /// Starts containerd through this argv prefix (given the scratch directory).
    pub wrapper: Option<Wrapper>,
    /// The node has a Nix state directory of its own (database, GC lock, GC roots; made by
    /// `nix-store --init`) in its scratch directory instead of the host's: for a store that
    /// only this node's mount namespace sees.
    pub private_store: bool,
    /// Runs `nixlet node run` alongside.
    pub agent: bool,
}

/// What the node config says besides the fixed parts; rewritten whole on each change.
#[derive(Debug, Clone, Default)]
struct Settings {
    substituters: String,
    runtime_binary: Option<String>,
    sources: String,
}

pub struct RelNode {
    pub node: TestNode,
    name: String,
    gc_roots_dir: PathBuf,
    gcroots_parent: Option<PathBuf>,
    trees_dir: Option<PathBuf>,
    private_store: bool,
    metrics_port: u16,
    agent: Option<NodeAgent>,
    settings: Mutex<Settings>,
    ids: Ids,
    markers: Mutex<Vec<String>>,
}

impl RelNode {
    pub fn start(name: &str, options: NodeOptions) -> Result<RelNode> {
        let node = match options.wrapper {
            Some(wrapper) => TestNode::start_wrapped(name, wrapper)?,
            None => TestNode::start(name, Shim::Built)?,
        };
        let tag = unique_tag("rel");
        let scratch = node
            .scratch_path()
            .context("node has no scratch")?
            .to_owned();
        let (gc_roots_dir, gcroots_parent, trees_dir) = if options.private_store {
            (
                scratch.join(PRIVATE_NIX_STATE).join("gcroots/nixlet"),
                None,
                None,
            )
        } else {
            let roots = Path::new(NIX_GCROOTS).join(format!("nixlet-{tag}"));
            let trees = Path::new(TREES_PARENT).join(format!("trees-{tag}"));
            (roots.clone(), Some(roots), Some(trees))
        };
        if options.private_store {
            init_nix_state(&scratch.join(PRIVATE_NIX_STATE))?;
        }
        fs::create_dir_all(&gc_roots_dir)?;
        let mut rel = RelNode {
            node,
            name: name.to_owned(),
            gc_roots_dir,
            gcroots_parent,
            trees_dir,
            private_store: options.private_store,
            metrics_port: free_port()?,
            agent: None,
            settings: Mutex::new(Settings::default()),
            ids: Ids::default(),
            markers: Mutex::new(Vec::new()),
        };
        rel.apply()?;
        if options.agent {
            let log = rel.node.scratch_subdir("agent")?.join("agent.log");
            rel.agent = Some(NodeAgent::start(
                rel.node.node_config_path(),
                rel.metrics_port,
                &log,
            )?);
        }
        Ok(rel)
    }

    /// Rewrites the node config from the current settings; shims started from now on read it.
    fn apply(&self) -> Result<()> {
        let settings = self.settings().clone();
        let scratch = self.node.scratch_path().context("node is torn down")?;
        let mut top = format!("gc_roots_dir = \"{}\"\n", self.gc_roots_dir.display());
        let mut extra = LIMITS.toml();
        if self.private_store {
            let state = scratch.join(PRIVATE_NIX_STATE);
            top.push_str(&format!(
                "nix_db = \"{}\"\n",
                state.join("db/db.sqlite").display()
            ));
            // Store trees hard-link store files, which a store of its own on another
            // filesystem cannot give: one bind mount per path.
            extra.push_str(&format!(
                "\n[gc]\ngcroots_dir = \"{}\"\n\n[mounts]\nstrategy = \"per-path\"\n",
                state.join("gcroots").display()
            ));
        } else if let Some(trees) = &self.trees_dir {
            extra.push_str(&format!(
                "\n[mounts]\ntrees_dir = \"{}\"\n",
                trees.display()
            ));
        }
        extra.push_str(&format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{}\"\n",
            self.metrics_port
        ));
        extra.push('\n');
        extra.push_str(&settings.sources);
        extra.push('\n');
        extra.push_str(&settings.substituters);
        let runtime = format!(
            "binary_name = \"{}\"",
            settings.runtime_binary.as_deref().unwrap_or("runc")
        );
        self.node.set_node_config(&top, &runtime, &extra)
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `[[substituters]]` TOML (empty: none) for pods started from now on.
    pub fn set_substituters(&self, toml: &str) -> Result<()> {
        self.settings().substituters = toml.to_owned();
        self.apply()
    }

    /// More `[[sources]]` after the node's `dir` source.
    pub fn set_extra_sources(&self, toml: &str) -> Result<()> {
        self.settings().sources = toml.to_owned();
        self.apply()
    }

    /// The OCI runtime binary the shim hands to the runc shim (`runc` by default).
    pub fn set_runtime_binary(&self, binary: Option<&str>) -> Result<()> {
        self.settings().runtime_binary = binary.map(str::to_owned);
        self.apply()
    }

    /// Store entries containing `marker` (a closure's tag, an environment's owner) are this
    /// node's: their temporaries and locks are counted.
    pub fn add_marker(&self, marker: &str) {
        self.markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(marker.to_owned());
    }

    /// The ids of every pod and container the node made (shared with worker threads).
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// The node's own store-tree directory.
    pub fn trees_dir(&self) -> Option<&Path> {
        self.trees_dir.as_deref()
    }

    pub fn address(&self) -> String {
        self.node.containerd_address().display().to_string()
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(NodeAgent::pid)
    }

    pub fn gc_roots_dir(&self) -> &Path {
        &self.gc_roots_dir
    }

    pub fn scope(&self) -> CensusScope {
        let mut mount_prefixes: Vec<PathBuf> = self
            .node
            .scratch_path()
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        mount_prefixes.extend(self.trees_dir.clone());
        mount_prefixes.push(PathBuf::from(nixlet_e2e::store_paths::STORE_DIR));
        CensusScope {
            address: self.node.containerd_address().to_path_buf(),
            containerd_pid: self.node.containerd_pid(),
            mount_prefixes,
            gc_roots_dir: Some(self.gc_roots_dir.clone()),
            trees_dir: self.trees_dir.clone(),
            telemetry_dir: Some(self.node.state_dir().join("telemetry")),
            store_markers: self
                .markers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            agent_pid: self.agent_pid(),
            ids: self.ids.all(),
        }
    }

    pub fn census(&self) -> Census {
        Census::take(&self.scope())
    }

    /// Waits until no shim of this containerd runs (the pods were removed), then the agent has
    /// read what their shims recorded; returns the census then.
    pub fn settled_census(&self) -> Census {
        let address = self.address();
        let _ = wait::poll(
            "the node's shims to exit",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || Ok(procs::shims_of(&address).is_empty().then_some(())),
        );
        if self.agent.is_some() {
            // The agent reads telemetry every 2 s and removes the files of exited shims.
            let _ = wait::poll(
                "the agent to read the shims' telemetry",
                Duration::from_secs(8),
                Duration::from_millis(200),
                || {
                    let census = self.census();
                    Ok(census.telemetry_files.is_empty().then_some(()))
                },
            );
        }
        self.census()
    }

    /// Stops and removes every pod of the node, as the kubelet does when they are deleted,
    /// retrying for a while as the kubelet does too. Returns what still failed in the end,
    /// and what failed on the way (a removal that needed a retry).
    pub fn remove_all_pods(&self) -> Removal {
        let mut removal = Removal::default();
        for round in 0..REMOVAL_ROUNDS {
            let problems = self.node.cri().remove_all_pods();
            if problems.is_empty() {
                return removal;
            }
            if round + 1 == REMOVAL_ROUNDS {
                removal.failed = problems;
            } else {
                removal.retried.extend(problems);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        removal
    }

    /// `nixlet gc` with this node's config and no grace period: deletes every path nixlet
    /// installed on this node that no root holds, and the store trees no root uses.
    pub fn nixlet_gc(&self) -> Result<String> {
        self.gc_command()?.run()
    }

    /// The same as a value another thread can run.
    pub fn gc_command(&self) -> Result<GcCommand> {
        Ok(GcCommand {
            cli: shim_build::cli_binary()?,
            config: self.node.node_config_path().to_path_buf(),
        })
    }

    /// Removes the pods, collects garbage, and tears the node down; returns what was left
    /// (a store tree that survived `nixlet gc`, say) and what the teardown had to undo.
    pub fn finish(self) -> Vec<String> {
        let mut leaks = Vec::new();
        let removal = self.remove_all_pods();
        leaks.extend(
            removal
                .failed
                .iter()
                .map(|p| format!("removing the pods: {p}")),
        );
        // A private store is only seen from containerd's namespace: `nixlet gc` run here would
        // look at the host's.
        if removal.failed.is_empty() && !self.private_store {
            if let Err(e) = self.nixlet_gc() {
                leaks.push(format!("{e:#}"));
            }
        }
        let RelNode {
            node,
            name,
            gcroots_parent,
            trees_dir,
            agent,
            ..
        } = self;
        // By pid, the one process it started.
        drop(agent);
        if let Err(e) = node.finish() {
            leaks.push(format!("teardown of {name}: {e:#}"));
        }
        for dir in gcroots_parent.iter().chain(&trees_dir) {
            if let Ok(entries) = fs::read_dir(dir) {
                let left: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                if !left.is_empty() {
                    leaks.push(format!("{} left with {left:?}", dir.display()));
                }
            }
            let _ = fs::remove_dir_all(dir);
        }
        leaks
    }
}
