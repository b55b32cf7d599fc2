//! `nixlet node run`: the DaemonSet's main process. It labels the node ready once the runtime is
//! installed, then on every interval copies environments from the mounted ConfigMap into the
//! node's `dir` source and sweeps GC roots of containers that no longer exist.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use nixlet_shim::config::{NodeConfig, SourceConfig};

use crate::environment_sync::sync_environments;
use crate::node_label::{self, InCluster};
use crate::stale_roots::{sweep_stale_roots, DEFAULT_RUNC_ROOT, GRACE};

static ROUNDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Args)]
pub struct RunArgs {
    /// Where the node's root file system is mounted (`/` when run on the node itself).
    #[arg(long)]
    host_root: PathBuf,
    /// The mounted ConfigMap of environments (`<owner>/<name>/<N>/manifest.toml` …).
    #[arg(long)]
    environments_from: Option<PathBuf>,
    /// Seconds between two rounds.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// This node's name (the downward API's `spec.nodeName`), for the ready label.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Run one round and exit (for tests and manual use).
    #[arg(long)]
    once: bool,
}

impl RunArgs {
    /// GC runs on the `[gc] interval_secs` cadence, counted in rounds.
    fn collect_now(&self, config: &NodeConfig) -> bool {
        let Some(interval) = config.gc.interval_secs else {
            return false;
        };
        let round = ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let every = (interval / self.interval.max(1)).max(1);
        round.is_multiple_of(every)
    }

    pub fn run(self) -> Result<()> {
        let host =
            |path: &std::path::Path| self.host_root.join(path.strip_prefix("/").unwrap_or(path));
        let config_path = host(std::path::Path::new(
            nixlet_shim::config::DEFAULT_CONFIG_PATH,
        ));
        let config = NodeConfig::load_from(&config_path)?;

        if let (Some(cluster), Some(node)) = (InCluster::detect(), &self.node_name) {
            node_label::set_ready(&cluster, node, true)
                .with_context(|| format!("label node {node} {}=true", node_label::READY_LABEL))?;
            tracing::info!(node = %node, "node labelled ready");
        } else {
            tracing::info!("not in a cluster (or no node name): node not labelled");
        }

        loop {
            self.round(&config, &host)?;
            if self.once {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(self.interval));
        }
    }

    fn round(&self, config: &NodeConfig, host: &dyn Fn(&std::path::Path) -> PathBuf) -> Result<()> {
        if let Some(from) = &self.environments_from {
            let target = config.sources.iter().find_map(|source| match source {
                SourceConfig::Dir { root } => Some(host(root)),
                _ => None,
            });
            match target {
                Some(to) => {
                    let report = sync_environments(from, &to)
                        .with_context(|| format!("copy environments from {}", from.display()))?;
                    for written in &report.written {
                        println!("environment file {}", written.display());
                    }
                    for ignored in &report.ignored {
                        tracing::warn!(path = %ignored.display(), "not an environment source layout; ignored");
                    }
                }
                None => {
                    tracing::warn!("the node config has no dir source to copy environments into")
                }
            }
        }
        let removed = sweep_stale_roots(
            &host(&config.gc_roots_dir),
            &host(std::path::Path::new(DEFAULT_RUNC_ROOT)),
            GRACE,
            SystemTime::now(),
        )
        .context("sweep stale gc roots")?;
        for root in removed {
            println!("stale gc root removed {}", root.display());
        }
        if self.collect_now(config) {
            // Store paths are absolute: the DaemonSet mounts the node's /nix at /nix for this.
            let report = nixlet_store::collect_garbage(&config.gc_options(false))
                .context("garbage collection")?;
            println!(
                "gc freed {} paths ({} bytes)",
                report.deleted.len(),
                report.freed_bytes
            );
        }
        Ok(())
    }
}
