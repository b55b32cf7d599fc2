//! The node agent as the DaemonSet runs it: the real `nixlet node run`, built from this
//! workspace, with its own config file, killed by its pid when the test is done (pass, fail or
//! panic), and scraped over HTTP like Prometheus would.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::shim_build;
use crate::wait;

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `nixlet node run`.
pub struct NodeAgent {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
}

impl NodeAgent {
    /// Starts `nixlet node run --config CONFIG` (host root `/`), whose config must set
    /// `[metrics] listen = "127.0.0.1:PORT"`; returns once `/metrics` answers.
    pub fn start(config: &Path, port: u16, log: &Path) -> Result<NodeAgent> {
        let binary = shim_build::cli_binary()?;
        let output = fs::File::create(log)?;
        let child = Command::new(binary)
            .args(["node", "run", "--host-root", "/", "--interval", "3600"])
            .arg("--config")
            .arg(config)
            .env("NIXLET_LOG", "info")
            // Not in a cluster: no Events, no node label.
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .context("starting nixlet node run")?;
        let mut agent = NodeAgent {
            child,
            metrics: SocketAddr::from(([127, 0, 0, 1], port)),
            log: log.to_path_buf(),
        };
        wait::poll(
            "nixlet node run to serve /metrics",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                if let Some(status) = agent.child.try_wait()? {
                    bail!("nixlet node run exited ({status}): {}", agent.log_text());
                }
                Ok(agent.get("/healthz").ok())
            },
        )?;
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One plain HTTP/1.0 GET; the body of a 200 answer.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.metrics
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed answer {answer:?}"))?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {head}");
        }
        Ok(body.to_owned())
    }

    /// `/metrics` as a map from series (`name{labels}` as exposed) to value.
    pub fn scrape(&self) -> Result<Scrape> {
        let text = self.get("/metrics")?;
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.rsplit_once(' '))
            .map(|(series, value)| (series.to_owned(), value.parse().unwrap_or(f64::NAN)))
            .collect();
        Ok(Scrape { text, series })
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        // By pid, the one process this guard started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Scrape {
    pub text: String,
    pub series: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of one series; absent counts as 0 (a labelled counter appears once it moved).
    pub fn value(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }
}
