//! A loopback OCI registry: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with its
//! storage in a temporary directory, and a push of an OCI image layout to it with the registry
//! HTTP API (monolithic blob uploads through `curl`), so no Docker or skopeo is needed.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::nix_cli::run;

pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`: how image references name it.
    pub host: String,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Where the registry keeps its blobs.
    pub fn storage(&self) -> &std::path::Path {
        self._storage.path()
    }

    pub fn start() -> Result<Self> {
        let storage = tempfile::tempdir()?;
        // A free port: bound and released; nothing else on this machine races for it.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                storage.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (Debian package docker-registry)")?;
        let registry = Self {
            child,
            host,
            _storage: storage,
        };
        nixlet_e2e::wait::poll(
            "the registry to answer /v2/",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                Ok(registry
                    .curl(&["-o", "/dev/null", &registry.url("/v2/")])
                    .ok())
            },
        )?;
        Ok(registry)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    fn curl(&self, args: &[&str]) -> Result<String> {
        run(Command::new("curl").args(["-sSf"]).args(args))
    }

    /// Pushes the image tagged `tag` in the OCI layout at `layout` as `<host>/<repo>:<tag>`;
    /// returns that reference and the compressed size of the image's layers.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) -> Result<(String, u64)> {
        let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
        let descriptor = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
                })
            })
            .with_context(|| format!("no image tagged {tag} in {}", layout.display()))?;
        let manifest_path = blob_path(layout, descriptor["digest"].as_str().unwrap_or_default())?;
        let manifest: Value = serde_json::from_slice(&fs::read(&manifest_path)?)?;
        let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap_or_default()];
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        blobs.extend(layers.iter().filter_map(|l| l["digest"].as_str()));
        let layer_bytes = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
        for digest in blobs {
            self.upload_blob(repo, digest, &blob_path(layout, digest)?)?;
        }
        let media_type = descriptor["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json");
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {media_type}"),
            "--data-binary",
            &format!("@{}", manifest_path.display()),
            &self.url(&format!("/v2/{repo}/manifests/{tag}")),
        ])?;
        Ok((format!("{}/{repo}:{tag}", self.host), layer_bytes))
    }

    /// POST for an upload session, then one PUT with the whole blob and its digest.
    fn upload_blob(&self, repo: &str, digest: &str, file: &Path) -> Result<()> {
        let headers = self.curl(&[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &self.url(&format!("/v2/{repo}/blobs/uploads/")),
        ])?;
        let location = headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("location")
                    .then(|| value.trim().to_owned())
            })
            .context("the registry gave no upload location")?;
        let location = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{location}{separator}digest={digest}"),
        ])?;
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The registry keeps nothing worth a graceful stop: its storage goes with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blob_path(layout: &Path, digest: &str) -> Result<std::path::PathBuf> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest:?}");
    };
    Ok(layout.join("blobs/sha256").join(hex))
}
