//! The agent's end of nixlet-telemetry: reads what shims recorded, folds it into the metrics and
//! hands failures on to become Events. Runs on a timer and before every scrape, so a scrape
//! right after a Create already counts it.

use std::sync::{Arc, Mutex};

use nixlet_telemetry::RecordReader;

use crate::create_events::EventSink;
use crate::node_metrics::NodeMetrics;

pub struct TelemetryIngest {
    reader: Mutex<RecordReader>,
    metrics: Arc<NodeMetrics>,
    events: Option<EventSink>,
}

impl TelemetryIngest {
    pub fn new(
        reader: RecordReader,
        metrics: Arc<NodeMetrics>,
        events: Option<EventSink>,
    ) -> TelemetryIngest {
        TelemetryIngest {
            reader: Mutex::new(reader),
            metrics,
            events,
        }
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Folds everything recorded since the last call. A record directory that cannot be read is
    /// logged and tried again next time.
    pub fn pump(&self) {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let batch = match reader.poll() {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(dir = %reader.dir().display(), %error, "cannot read the shims' records");
                return;
            }
        };
        drop(reader);
        for record in &batch.records {
            self.metrics.fold(record);
            if let Some(events) = &self.events {
                events.offer(record);
            }
        }
        self.metrics.records_skipped(batch.skipped);
        for file in &batch.removed {
            tracing::debug!(file = %file.display(), "records of an exited shim consumed");
        }
    }
}
