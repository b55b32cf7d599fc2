//! Labelling this node `nixlet.dev/ready=true` through the API server, with the DaemonSet's
//! service account (RBAC allows `get`/`patch` on nodes and nothing else).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub const READY_LABEL: &str = "nixlet.dev/ready";
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and how to reach the API server from inside a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    pub base_url: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

impl InCluster {
    /// The in-cluster configuration, or `None` outside a pod (no service host or no token).
    pub fn detect() -> Option<InCluster> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        let token_file = dir.join("token");
        if !token_file.is_file() {
            return None;
        }
        // An IPv6 service host needs brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(InCluster {
            base_url: format!("https://{host}:{port}"),
            token_file,
            ca_file: dir.join("ca.crt"),
        })
    }
}

impl InCluster {
    /// A client for the API server and the service account's bearer token. The cluster CA is
    /// required for https; a plain `http://` base URL (a test's stand-in for the API server)
    /// needs none.
    pub fn client(&self) -> Result<(reqwest::blocking::Client, String)> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("read service account token {}", self.token_file.display()))?;
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        if !self.base_url.starts_with("http://") {
            let ca = std::fs::read(&self.ca_file)
                .with_context(|| format!("read cluster CA {}", self.ca_file.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&ca).context("parse cluster CA")?,
            );
        }
        Ok((builder.build()?, token.trim().to_string()))
    }
}

/// The JSON merge patch that sets (or, with `ready = false`, removes) the label.
pub fn label_patch(ready: bool) -> Value {
    let value = if ready { json!("true") } else { Value::Null };
    json!({ "metadata": { "labels": { READY_LABEL: value } } })
}

pub fn node_url(cluster: &InCluster, node: &str) -> String {
    format!("{}/api/v1/nodes/{node}", cluster.base_url)
}

/// Sets or removes the ready label on `node`.
pub fn set_ready(cluster: &InCluster, node: &str, ready: bool) -> Result<()> {
    let (client, token) = cluster.client()?;
    let url = node_url(cluster, node);
    let response = client
        .patch(&url)
        .bearer_auth(&token)
        .header("Content-Type", "application/merge-patch+json")
        .body(label_patch(ready).to_string())
        .send()
        .with_context(|| format!("patch {url}"))?;
    if !response.status().is_success() {
        bail!(
            "patch {url}: {} {}",
            response.status(),
            response.text().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_sets_or_removes_only_the_ready_label() {
        assert_eq!(
            label_patch(true).to_string(),
            r#"{"metadata":{"labels":{"nixlet.dev/ready":"true"}}}"#
        );
        assert_eq!(
            label_patch(false).to_string(),
            r#"{"metadata":{"labels":{"nixlet.dev/ready":null}}}"#
        );
    }

    #[test]
    fn node_url_names_the_node() {
        let cluster = InCluster {
            base_url: "https://10.0.0.1:443".into(),
            token_file: "/t".into(),
            ca_file: "/c".into(),
        };
        assert_eq!(
            node_url(&cluster, "node-a"),
            "https://10.0.0.1:443/api/v1/nodes/node-a"
        );
    }
}
