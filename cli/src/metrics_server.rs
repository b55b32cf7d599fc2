//! `/metrics` over HTTP: a small blocking server on a thread of its own. Each scrape first reads
//! the shims' new records and measures the store, then answers the text exposition.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use nixlet_store::NixDb;

use crate::telemetry_ingest::TelemetryIngest;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where the store's size and free space are read at each scrape.
#[derive(Debug, Clone)]
pub struct StoreUsage {
    pub nix_db: PathBuf,
    pub store_dir: PathBuf,
}

impl StoreUsage {
    /// (sum of NarSize of valid paths, free bytes of the store's file system); a figure that
    /// cannot be read now is `None` and the gauge keeps its last value.
    pub fn measure(&self) -> (Option<u64>, Option<u64>) {
        let size = NixDb::open(&self.nix_db)
            .and_then(|db| db.store_nar_bytes())
            .map_err(|error| tracing::debug!(%error, "store size not measured"))
            .ok();
        let free = rustix::fs::statvfs(&self.store_dir)
            .map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
            .map_err(|error| tracing::debug!(%error, "store free space not measured"))
            .ok();
        (size, free)
    }
}

/// Binds `listen` and serves until the process exits; returns the bound address.
pub fn serve(
    listen: SocketAddr,
    ingest: Arc<TelemetryIngest>,
    store: StoreUsage,
) -> Result<SocketAddr> {
    let server = tiny_http::Server::http(listen)
        .map_err(|error| anyhow!("listen for /metrics on {listen}: {error}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("listen for /metrics on {listen}: not an IP socket"))?;
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = match (request.method(), request.url()) {
                (tiny_http::Method::Get, "/metrics") => {
                    ingest.pump();
                    let (size, free) = store.measure();
                    ingest.metrics().set_store(size, free);
                    let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                        .expect("a valid header");
                    tiny_http::Response::from_string(ingest.metrics().encode()).with_header(header)
                }
                (tiny_http::Method::Get, "/healthz") => tiny_http::Response::from_string("ok\n"),
                _ => tiny_http::Response::from_string("not found: try /metrics\n")
                    .with_status_code(404),
            };
            if let Err(error) = request.respond(response) {
                tracing::debug!(%error, "metrics client went away");
            }
        }
    });
    Ok(bound)
}
