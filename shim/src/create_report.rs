//! What one Create did: the pod it belongs to, the environment, the fetch, the outcome. It ends
//! as one log line and one record for the node agent's metrics and Events (nixlet-telemetry);
//! neither may fail or hold up the Create.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nixlet_store::FetchSummary;
use nixlet_telemetry::{CreateRecord, FetchFigures, Outcome, SubstituterFetch, VERSION};

use crate::create_error::CreateError;
use crate::prepare::Prepared;

/// CRI's container annotations naming the pod (containerd copies them into every spec).
const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
/// The pod's uid: containerd 1.6+ sets the first; the second is the kubelet's own label name,
/// which some runtimes pass through as an annotation.
const POD_UID_KEYS: [&str; 2] = ["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
    pub container_name: Option<String>,
}

impl PodIdentity {
    pub fn from_annotations(annotations: &HashMap<String, String>) -> PodIdentity {
        let get = |key: &str| annotations.get(key).filter(|v| !v.is_empty()).cloned();
        PodIdentity {
            namespace: get(SANDBOX_NAMESPACE),
            name: get(SANDBOX_NAME),
            uid: POD_UID_KEYS.iter().find_map(|key| get(key)),
            container_name: get(CONTAINER_NAME),
        }
    }
}

/// `namespace/name`, or `-` outside Kubernetes (`ctr run`).
impl fmt::Display for PodIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(namespace), Some(name)) => write!(f, "{namespace}/{name}"),
            _ => f.write_str("-"),
        }
    }
}

/// Filled in by `prepare_bundle` as Create goes through its phases.
#[derive(Debug, Clone, Default)]
pub struct CreateReport {
    pub pod: PodIdentity,
    /// The environment reference as the pod wrote it.
    pub reference: Option<String>,
    /// `owner/name:N`, once resolved.
    pub environment: Option<String>,
    pub fetch: Option<FetchSummary>,
}

impl CreateReport {
    /// The record of a Create nixlet took part in; `None` for containers it left alone.
    pub fn record(
        &self,
        container: &str,
        outcome: Result<&Prepared, &CreateError>,
        elapsed: Duration,
    ) -> Option<CreateRecord> {
        let (outcome, phase, message) = match outcome {
            Ok(Prepared::Unchanged) => return None,
            Ok(Prepared::Rewritten { .. }) => (Outcome::Rewritten, None, None),
            Err(error) => (
                Outcome::Failed,
                Some(error.phase.to_string()),
                Some(error.to_string()),
            ),
        };
        let resolved = if self.environment.is_some() {
            Some(true)
        } else if phase.as_deref() == Some("resolve") {
            Some(false)
        } else {
            None
        };
        Some(CreateRecord {
            version: VERSION,
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            container: container.to_string(),
            container_name: self.pod.container_name.clone(),
            pod_namespace: self.pod.namespace.clone(),
            pod_name: self.pod.name.clone(),
            pod_uid: self.pod.uid.clone(),
            reference: self.reference.clone(),
            environment: self.environment.clone(),
            outcome,
            phase,
            message,
            resolved,
            duration_ms: elapsed.as_millis() as u64,
            fetch: self.fetch.as_ref().map(fetch_figures),
        })
    }

    /// Logs the Create's one closing line and leaves its record for the node agent. A record
    /// that cannot be written costs a metric, never the container: the error is only logged.
    pub fn finish(
        &self,
        container: &str,
        outcome: Result<&Prepared, &CreateError>,
        elapsed: Duration,
        telemetry_dir: &Path,
    ) {
        let Some(record) = self.record(container, outcome, elapsed) else {
            return;
        };
        let fetched = self.fetch.as_ref();
        let result = match record.outcome {
            Outcome::Rewritten => "rewritten",
            Outcome::Failed => "failed",
        };
        tracing::info!(
            container = %container,
            pod = %self.pod,
            environment = %self.environment.as_deref().or(self.reference.as_deref()).unwrap_or("-"),
            outcome = %result,
            phase = %record.phase.as_deref().unwrap_or("-"),
            duration_ms = record.duration_ms,
            paths_fetched = fetched.map_or(0, |f| f.paths_fetched),
            bytes_fetched = fetched.map_or(0, |f| f.bytes_downloaded),
            "create finished"
        );
        if let Err(error) = nixlet_telemetry::append_record(telemetry_dir, &record) {
            tracing::warn!(dir = %telemetry_dir.display(), %error, "cannot leave the create record for the node agent");
        }
    }
}

fn fetch_figures(summary: &FetchSummary) -> FetchFigures {
    FetchFigures {
        duration_ms: summary.elapsed.as_millis() as u64,
        already_valid: summary.paths_already_valid as u64,
        bytes_downloaded: summary.bytes_downloaded,
        substituters: summary
            .by_substituter
            .iter()
            .map(|(url, tally)| SubstituterFetch {
                url: url.clone(),
                paths: tally.paths as u64,
                nar_bytes: tally.nar_bytes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create_error::Phase;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_pod_is_named_from_cri_annotations() {
        let pod = PodIdentity::from_annotations(&annotations(&[
            (SANDBOX_NAMESPACE, "shop"),
            (SANDBOX_NAME, "web-1"),
            (CONTAINER_NAME, "app"),
            ("io.kubernetes.pod.uid", "u-1"),
        ]));
        assert_eq!(pod.to_string(), "shop/web-1");
        assert_eq!(pod.uid.as_deref(), Some("u-1"));
        assert_eq!(pod.container_name.as_deref(), Some("app"));
        assert_eq!(PodIdentity::default().to_string(), "-");
    }

    #[test]
    fn records_say_what_happened() {
        let mut report = CreateReport {
            reference: Some("acme/web".into()),
            ..CreateReport::default()
        };
        let error = CreateError {
            phase: Phase::Resolve,
            reference: Some("acme/web".into()),
            cause: "not found".into(),
        };
        let failed = report
            .record("c1", Err(&error), Duration::from_millis(7))
            .unwrap();
        assert_eq!(
            (failed.outcome, failed.phase.as_deref(), failed.resolved),
            (Outcome::Failed, Some("resolve"), Some(false))
        );
        assert_eq!(
            failed.message.as_deref(),
            Some("nixlet: resolve acme/web: not found")
        );
        assert!(report
            .record("c0", Ok(&Prepared::Unchanged), Duration::ZERO)
            .is_none());

        report.environment = Some("acme/web:1".into());
        let mut summary = FetchSummary {
            paths_fetched: 2,
            paths_already_valid: 1,
            ..FetchSummary::default()
        };
        summary.by_substituter.insert(
            "http://cache".into(),
            nixlet_store::SubstituterTally {
                paths: 2,
                nar_bytes: 10,
            },
        );
        report.fetch = Some(summary);
        let error = CreateError {
            phase: Phase::Rewrite,
            reference: Some("acme/web".into()),
            cause: "no command".into(),
        };
        let record = report.record("c2", Err(&error), Duration::ZERO).unwrap();
        assert_eq!(record.resolved, Some(true));
        let fetch = record.fetch.unwrap();
        assert_eq!(fetch.already_valid, 1);
        assert_eq!(
            fetch.substituters,
            [SubstituterFetch {
                url: "http://cache".into(),
                paths: 2,
                nar_bytes: 10
            }]
        );
    }
}
