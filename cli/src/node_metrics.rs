//! The node agent's Prometheus metrics: the families, and how shims' Create records, GC runs,
//! root sweeps and the store's size fold into them. Counters live in the agent, so they outlive
//! every shim; they start from zero when the agent starts (Prometheus' `rate()` handles that).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use nixlet_telemetry::{CreateRecord, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubstituterLabels {
    pub substituter: String,
}

pub struct NodeMetrics {
    registry: Registry,
    containers_rewritten: Counter,
    create_failures: Family<PhaseLabels, Counter>,
    environment_resolutions: Family<ResultLabels, Counter>,
    fetched_paths: Family<SubstituterLabels, Counter>,
    fetched_nar_bytes: Family<SubstituterLabels, Counter>,
    downloaded_bytes: Counter,
    fetch_duration: Histogram,
    cache_hits: Counter,
    store_size: Gauge,
    store_free: Gauge,
    gc_runs: Family<ResultLabels, Counter>,
    gc_freed_bytes: Counter,
    gc_deleted_paths: Counter,
    stale_roots_swept: Counter,
    records_skipped: Counter,
    events: Family<ResultLabels, Counter>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        let mut registry = Registry::with_prefix("nixlet");
        let metrics = NodeMetrics {
            containers_rewritten: Counter::default(),
            create_failures: Family::default(),
            environment_resolutions: Family::default(),
            fetched_paths: Family::default(),
            fetched_nar_bytes: Family::default(),
            downloaded_bytes: Counter::default(),
            // 50 ms … ~7 min: a warm closure is checked in milliseconds, a cold one can take minutes.
            fetch_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            cache_hits: Counter::default(),
            store_size: Gauge::default(),
            store_free: Gauge::default(),
            gc_runs: Family::default(),
            gc_freed_bytes: Counter::default(),
            gc_deleted_paths: Counter::default(),
            stale_roots_swept: Counter::default(),
            records_skipped: Counter::default(),
            events: Family::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        registry.register(
            "containers_rewritten",
            "Containers whose spec nixlet rewrote for their environment",
            m.containers_rewritten.clone(),
        );
        registry.register(
            "create_failures",
            "Creates nixlet refused, by the phase that refused them",
            m.create_failures.clone(),
        );
        registry.register(
            "environment_resolutions",
            "Environment references resolved (result ok) or not (result error)",
            m.environment_resolutions.clone(),
        );
        registry.register(
            "fetched_paths",
            "Store paths downloaded and installed, by substituter",
            m.fetched_paths.clone(),
        );
        registry.register(
            "fetched_nar_bytes",
            "Uncompressed NAR bytes of the store paths installed, by substituter",
            m.fetched_nar_bytes.clone(),
        );
        registry.register(
            "fetch_downloaded_bytes",
            "Compressed bytes received from substituters, failed attempts included",
            m.downloaded_bytes.clone(),
        );
        registry.register(
            "fetch_duration_seconds",
            "Time to make a container's closure valid, per Create that fetched",
            m.fetch_duration.clone(),
        );
        registry.register(
            "fetch_cache_hits",
            "Closure paths that were already valid in the node store when a Create needed them",
            m.cache_hits.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Sum of NarSize of the valid paths in the node store",
            m.store_size.clone(),
        );
        registry.register(
            "store_free_bytes",
            "Free bytes on the file system of /nix/store",
            m.store_free.clone(),
        );
        registry.register(
            "gc_runs",
            "Garbage collections by nixlet node run, by result",
            m.gc_runs.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "NarSize of the store paths garbage collection deleted",
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "gc_deleted_paths",
            "Store paths garbage collection deleted",
            m.gc_deleted_paths.clone(),
        );
        registry.register(
            "stale_gc_roots_swept",
            "GC roots of containers that no longer exist, removed",
            m.stale_roots_swept.clone(),
        );
        registry.register(
            "telemetry_records_skipped",
            "Lines of the shims' record that were not records (torn or garbage)",
            m.records_skipped.clone(),
        );
        registry.register(
            "events",
            "Kubernetes Events for failed Creates: posted, failed, or suppressed by rate limits",
            m.events.clone(),
        );
        NodeMetrics {
            registry,
            ..metrics
        }
    }

    /// One shim's Create, as its record says.
    pub fn fold(&self, record: &CreateRecord) {
        match record.outcome {
            Outcome::Rewritten => {
                self.containers_rewritten.inc();
            }
            Outcome::Failed => {
                let phase = record.phase.clone().unwrap_or_else(|| "unknown".into());
                self.create_failures
                    .get_or_create(&PhaseLabels { phase })
                    .inc();
            }
        }
        if let Some(resolved) = record.resolved {
            let result = if resolved { "ok" } else { "error" };
            self.environment_resolutions
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .inc();
        }
        if let Some(fetch) = &record.fetch {
            self.fetch_duration
                .observe(fetch.duration_ms as f64 / 1000.0);
            self.cache_hits.inc_by(fetch.already_valid);
            self.downloaded_bytes.inc_by(fetch.bytes_downloaded);
            for substituter in &fetch.substituters {
                let labels = SubstituterLabels {
                    substituter: substituter.url.clone(),
                };
                self.fetched_paths
                    .get_or_create(&labels)
                    .inc_by(substituter.paths);
                self.fetched_nar_bytes
                    .get_or_create(&labels)
                    .inc_by(substituter.nar_bytes);
            }
        }
    }

    pub fn records_skipped(&self, lines: u64) {
        self.records_skipped.inc_by(lines);
    }

    pub fn gc_ran(&self, deleted_paths: usize, freed_bytes: u64) {
        self.gc_runs
            .get_or_create(&ResultLabels {
                result: "ok".into(),
            })
            .inc();
        self.gc_deleted_paths.inc_by(deleted_paths as u64);
        self.gc_freed_bytes.inc_by(freed_bytes);
    }

    pub fn gc_failed(&self) {
        self.gc_runs
            .get_or_create(&ResultLabels {
                result: "error".into(),
            })
            .inc();
    }

    pub fn roots_swept(&self, roots: usize) {
        self.stale_roots_swept.inc_by(roots as u64);
    }

    pub fn event(&self, result: &str) {
        self.events
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_store(&self, size_bytes: Option<u64>, free_bytes: Option<u64>) {
        if let Some(size) = size_bytes {
            self.store_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Some(free) = free_bytes {
            self.store_free.set(i64::try_from(free).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition (OpenMetrics, which Prometheus scrapes as its text format).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use nixlet_telemetry::{FetchFigures, SubstituterFetch, VERSION};

    use super::*;

    fn record(outcome: Outcome, phase: Option<&str>) -> CreateRecord {
        CreateRecord {
            version: VERSION,
            at: 1,
            container: "c".into(),
            container_name: None,
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            reference: Some("acme/web".into()),
            environment: None,
            outcome,
            phase: phase.map(str::to_string),
            message: None,
            resolved: None,
            duration_ms: 1,
            fetch: None,
        }
    }

    #[test]
    fn records_fold_into_the_exposition() {
        let metrics = NodeMetrics::new();
        let mut rewritten = record(Outcome::Rewritten, None);
        rewritten.resolved = Some(true);
        rewritten.fetch = Some(FetchFigures {
            duration_ms: 250,
            already_valid: 4,
            bytes_downloaded: 900,
            substituters: vec![SubstituterFetch {
                url: "http://127.0.0.1:5000".into(),
                paths: 3,
                nar_bytes: 4096,
            }],
        });
        metrics.fold(&rewritten);
        metrics.fold(&rewritten);
        let mut failed = record(Outcome::Failed, Some("resolve"));
        failed.resolved = Some(false);
        metrics.fold(&failed);
        metrics.fold(&record(Outcome::Failed, Some("verify")));
        metrics.gc_ran(2, 1000);
        metrics.roots_swept(3);
        metrics.set_store(Some(123), Some(456));
        let text = metrics.encode();
        for line in [
            "nixlet_containers_rewritten_total 2",
            "nixlet_create_failures_total{phase=\"resolve\"} 1",
            "nixlet_create_failures_total{phase=\"verify\"} 1",
            "nixlet_environment_resolutions_total{result=\"ok\"} 2",
            "nixlet_environment_resolutions_total{result=\"error\"} 1",
            "nixlet_fetched_paths_total{substituter=\"http://127.0.0.1:5000\"} 6",
            "nixlet_fetched_nar_bytes_total{substituter=\"http://127.0.0.1:5000\"} 8192",
            "nixlet_fetch_downloaded_bytes_total 1800",
            "nixlet_fetch_duration_seconds_count 2",
            "nixlet_fetch_cache_hits_total 8",
            "nixlet_store_size_bytes 123",
            "nixlet_store_free_bytes 456",
            "nixlet_gc_runs_total{result=\"ok\"} 1",
            "nixlet_gc_freed_bytes_total 1000",
            "nixlet_gc_deleted_paths_total 2",
            "nixlet_stale_gc_roots_swept_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
