//! `nixlet node run`: the DaemonSet's main process. It labels the node ready once the runtime is
//! installed, then on every interval copies environments from the mounted ConfigMap into the
//! node's `dir` source and sweeps GC roots of containers that no longer exist. Meanwhile it
//! serves Prometheus metrics (`[metrics]`), folding in what the shims recorded, and turns failed
//! Creates into Kubernetes Events when it can reach the API server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use nixlet_config::{NodeConfig, SourceConfig};

use crate::create_events::EventSink;
use crate::environment_sync::sync_environments;
use crate::metrics_server::{self, StoreUsage};
use crate::node_label::{self, InCluster};
use crate::node_metrics::NodeMetrics;
use crate::stale_roots::{sweep_stale_roots, DEFAULT_RUNC_ROOT, GRACE};
use crate::telemetry_ingest::TelemetryIngest;

static ROUNDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often the shims' records are read between scrapes (for Events; a scrape reads them too).
const TELEMETRY_POLL: Duration = Duration::from_secs(2);

/// Where the shims run as seen from the agent: the DaemonSet shares the host's PID namespace.
const PROC_ROOT: &str = "/proc";

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
    /// Run one round and exit (for tests and manual use); serves no metrics.
    #[arg(long)]
    once: bool,
    /// The node config (default: `<host-root>/etc/nixlet/config.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
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
        let config_path = self
            .config
            .clone()
            .unwrap_or_else(|| host(std::path::Path::new(nixlet_config::DEFAULT_CONFIG_PATH)));
        let config = NodeConfig::load_from(&config_path)?;

        let metrics = Arc::new(NodeMetrics::new());
        let events = InCluster::detect()
            .map(|cluster| EventSink::start(cluster, self.node_name.clone(), Arc::clone(&metrics)));
        let telemetry = Arc::new(TelemetryIngest::new(
            nixlet_telemetry::RecordReader::new(
                host(&config.telemetry_dir()),
                PathBuf::from(PROC_ROOT),
            ),
            Arc::clone(&metrics),
            events,
        ));
        if let (Some(listen), false) = (config.metrics_listen, self.once) {
            let store = StoreUsage {
                nix_db: config.nix_db.clone(),
                store_dir: PathBuf::from(nixlet_manifest::STORE_DIR),
            };
            let bound = metrics_server::serve(listen, Arc::clone(&telemetry), store)?;
            println!("metrics on http://{bound}/metrics");
            let telemetry = Arc::clone(&telemetry);
            std::thread::spawn(move || loop {
                telemetry.pump();
                std::thread::sleep(TELEMETRY_POLL);
            });
        } else {
            telemetry.pump();
        }

        if let (Some(cluster), Some(node)) = (InCluster::detect(), &self.node_name) {
            node_label::set_ready(&cluster, node, true)
                .with_context(|| format!("label node {node} {}=true", node_label::READY_LABEL))?;
            tracing::info!(node = %node, "node labelled ready");
        } else {
            tracing::info!("not in a cluster (or no node name): node not labelled");
        }

        loop {
            self.round(&config, &host, &metrics)?;
            if self.once {
                return Ok(());
            }
            std::thread::sleep(Duration::from_secs(self.interval));
        }
    }

    fn round(
        &self,
        config: &NodeConfig,
        host: &dyn Fn(&std::path::Path) -> PathBuf,
        metrics: &NodeMetrics,
    ) -> Result<()> {
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
        metrics.roots_swept(removed.len());
        for root in removed {
            println!("stale gc root removed {}", root.display());
        }
        if self.collect_now(config) {
            // Store paths are absolute: the DaemonSet mounts the node's /nix at /nix for this.
            let report = nixlet_store::collect_garbage(&config.gc_options(false))
                .inspect_err(|_| metrics.gc_failed())
                .context("garbage collection")?;
            metrics.gc_ran(report.deleted.len(), report.freed_bytes);
            println!(
                "gc freed {} paths ({} bytes)",
                report.deleted.len(),
                report.freed_bytes
            );
        }
        Ok(())
    }
}
