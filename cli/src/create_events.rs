//! Failed Creates as Kubernetes Events on their pod (reason `NixletCreateFailed`), so that
//! `kubectl describe pod` and `kubectl get events` show nixlet's line next to the kubelet's.
//!
//! Records reach [`EventSink`] from the agent's telemetry reader; a thread of its own posts them,
//! so a slow API server holds up neither the reader nor `/metrics`. Rate limits are in
//! `event_rate_limit.rs`; a record older than [`MAX_AGE`] (an agent that starts late reading
//! an old record) is counted in the metrics but not posted: the pod it names is likely gone.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use nixlet_telemetry::{CreateRecord, Outcome};
use serde_json::{json, Value};

use crate::event_rate_limit::{Decision, EventRateLimit};
use crate::node_label::InCluster;
use crate::node_metrics::NodeMetrics;

pub const REASON: &str = "NixletCreateFailed";
pub const MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// Records waiting to be posted; beyond this they are dropped (and counted), never waited on.
const QUEUE: usize = 256;

/// The core/v1 Event for a failed Create; `None` when the record names no pod (not a
/// Kubernetes container) or is no failure.
pub fn event_for(record: &CreateRecord, node: Option<&str>) -> Option<Value> {
    if record.outcome != Outcome::Failed {
        return None;
    }
    let (namespace, pod) = (record.pod_namespace.as_ref()?, record.pod_name.as_ref()?);
    let mut involved = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": namespace,
        "name": pod,
    });
    if let Some(uid) = &record.pod_uid {
        involved["uid"] = json!(uid);
    }
    if let Some(container) = &record.container_name {
        // How the kubelet names a container in its own Events.
        involved["fieldPath"] = json!(format!("spec.containers{{{container}}}"));
    }
    let at = rfc3339(record.at);
    let message = record
        .message
        .clone()
        .unwrap_or_else(|| "nixlet: create failed".into());
    Some(json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": format!("{pod}.nixlet-"),
            "namespace": namespace,
        },
        "involvedObject": involved,
        "reason": REASON,
        "message": message,
        "type": "Warning",
        "source": { "component": "nixlet", "host": node.unwrap_or_default() },
        "reportingComponent": "nixlet.dev/node",
        "reportingInstance": node.unwrap_or_default(),
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }))
}

/// Posts one Event to the API server.
pub fn post_event(cluster: &InCluster, event: &Value) -> Result<()> {
    let namespace = event["metadata"]["namespace"]
        .as_str()
        .context("event without a namespace")?;
    let (client, token) = cluster.client()?;
    let url = format!("{}/api/v1/namespaces/{namespace}/events", cluster.base_url);
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(event.to_string())
        .send()
        .with_context(|| format!("post {url}"))?;
    if !response.status().is_success() {
        bail!(
            "post {url}: {} {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }
    Ok(())
}

/// Hands failed Creates to the thread that posts them.
#[derive(Clone)]
pub struct EventSink {
    queue: SyncSender<CreateRecord>,
    metrics: Arc<NodeMetrics>,
}

impl EventSink {
    pub fn start(cluster: InCluster, node: Option<String>, metrics: Arc<NodeMetrics>) -> EventSink {
        let (queue, records) = mpsc::sync_channel(QUEUE);
        let poster_metrics = Arc::clone(&metrics);
        std::thread::spawn(move || post_loop(&cluster, node.as_deref(), records, &poster_metrics));
        EventSink { queue, metrics }
    }

    /// Queues a record if it should become an Event; never blocks.
    pub fn offer(&self, record: &CreateRecord) {
        if record.outcome != Outcome::Failed || record.pod_name.is_none() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now.saturating_sub(record.at) > MAX_AGE.as_secs() {
            self.metrics.event("too_old");
            return;
        }
        if self.queue.try_send(record.clone()).is_err() {
            self.metrics.event("dropped");
        }
    }
}

fn post_loop(
    cluster: &InCluster,
    node: Option<&str>,
    records: Receiver<CreateRecord>,
    metrics: &NodeMetrics,
) {
    let mut limit = EventRateLimit::default();
    for record in records {
        let Some(event) = event_for(&record, node) else {
            continue;
        };
        let (namespace, pod) = (
            record.pod_namespace.as_deref().unwrap_or_default(),
            record.pod_name.as_deref().unwrap_or_default(),
        );
        let message = record.message.as_deref().unwrap_or_default();
        match limit.check(namespace, pod, message, Instant::now()) {
            Decision::Post => match post_event(cluster, &event) {
                Ok(()) => {
                    tracing::info!(pod = %format!("{namespace}/{pod}"), "event posted");
                    metrics.event("posted");
                }
                Err(error) => {
                    tracing::warn!(pod = %format!("{namespace}/{pod}"), error = %format!("{error:#}"), "cannot post event");
                    metrics.event("failed");
                }
            },
            Decision::Repeated => metrics.event("repeated"),
            Decision::OverNodeLimit => metrics.event("over_node_limit"),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (Kubernetes' `Time` format).
pub fn rfc3339(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;

    use nixlet_telemetry::VERSION;

    use super::*;

    fn failed() -> CreateRecord {
        CreateRecord {
            version: VERSION,
            at: 1_732_470_000,
            container: "c1".into(),
            container_name: Some("web".into()),
            pod_namespace: Some("shop".into()),
            pod_name: Some("web-1".into()),
            pod_uid: Some("6b1c-uid".into()),
            reference: Some("acme/nope".into()),
            environment: None,
            outcome: Outcome::Failed,
            phase: Some("resolve".into()),
            message: Some("nixlet: resolve acme/nope: environment \"acme/nope\" not found".into()),
            resolved: Some(false),
            duration_ms: 2,
            fetch: None,
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_732_470_000), "2024-11-24T17:40:00Z");
    }

    #[test]
    fn only_failures_of_named_pods_become_events() {
        let event = event_for(&failed(), Some("node-a")).unwrap();
        assert_eq!(event["reason"], REASON);
        assert_eq!(event["type"], "Warning");
        assert_eq!(
            event["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-1",
                   "uid": "6b1c-uid", "fieldPath": "spec.containers{web}"})
        );
        assert_eq!(event["message"], failed().message.unwrap());
        let mut rewritten = failed();
        rewritten.outcome = Outcome::Rewritten;
        assert!(event_for(&rewritten, None).is_none());
        let mut podless = failed();
        podless.pod_name = None;
        assert!(event_for(&podless, None).is_none());
    }

    /// Requests the stand-in API server received: (method and path, Authorization, body).
    type Requests = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A loopback HTTP server standing in for the API server's HTTP contract: it records each
    /// request (method, path, Authorization, body) and answers 201 Created.
    fn recording_api_server() -> (String, Requests) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let (mut length, mut authorization) = (0, String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(": ").unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.parse().unwrap(),
                        "authorization" => authorization = value.to_string(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let line: Vec<&str> = request_line.split_whitespace().collect();
                recorded.lock().unwrap().push((
                    format!("{} {}", line[0], line[1]),
                    authorization,
                    String::from_utf8(body).unwrap(),
                ));
                let _ = reader.into_inner().write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        (url, seen)
    }

    #[test]
    fn failed_creates_are_posted_rate_limited_to_the_api_server() {
        let (url, seen) = recording_api_server();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "sa-token\n").unwrap();
        let cluster = InCluster {
            base_url: url,
            token_file,
            ca_file: dir.path().join("no-ca-over-http"),
        };
        let metrics = Arc::new(NodeMetrics::new());
        let sink = EventSink::start(cluster, Some("node-a".into()), Arc::clone(&metrics));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut record = failed();
        record.at = now;
        sink.offer(&record);
        sink.offer(&record); // the same pod and message: suppressed
        let mut other = record.clone();
        other.message = Some("nixlet: fetch acme/web: cannot connect".into());
        sink.offer(&other);
        let mut old = record.clone();
        old.at = now - 3600;
        old.pod_name = Some("old".into());
        sink.offer(&old); // too old to be news

        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for (request, authorization, _) in &seen {
            assert_eq!(request, "POST /api/v1/namespaces/shop/events");
            assert_eq!(authorization, "Bearer sa-token");
        }
        let bodies: Vec<Value> = seen
            .iter()
            .map(|(_, _, body)| serde_json::from_str(body).unwrap())
            .collect();
        assert_eq!(bodies[0]["message"], record.message.unwrap());
        assert_eq!(bodies[1]["message"], other.message.unwrap());
        assert_eq!(bodies[0]["involvedObject"]["uid"], "6b1c-uid");
        assert_eq!(bodies[0]["source"]["host"], "node-a");
        let text = metrics.encode();
        for line in [
            "nixlet_events_total{result=\"posted\"} 2",
            "nixlet_events_total{result=\"repeated\"} 1",
            "nixlet_events_total{result=\"too_old\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
