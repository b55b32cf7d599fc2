//! Finding out which containerd runs on the node.
//!
//! The daemon is asked over its own API socket (`containerd.services.version.v1.Version`, served
//! by 1.6 and every later release). That works from the DaemonSet's pod: the socket is reached
//! below the host root like any host file, whereas the host's `containerd` binary is linked
//! against the host's C library, which the nixlet image (static binaries on busybox) does not
//! have. The answer is also the release actually running, even when a package upgrade has
//! replaced the binary and containerd was not restarted yet.
//!
//! Running a binary with `--version` ([`binary_version`]) is the fallback for `nixlet doctor`,
//! which may find a containerd process whose socket it cannot reach.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use toml_edit::{DocumentMut, Item};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Endpoint, Uri};

use crate::containerd_schema;
use crate::containerd_version::{ContainerdVersion, VersionError};
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::managed_file;
use crate::names::CONTAINERD_CONFIG;

/// Where containerd listens when its config does not say.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// containerd answers Version from memory; anything slower is a daemon that is not serving.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION_METHOD: &str = "/containerd.services.version.v1.Version/Version";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("ask containerd at {} for its version: {message}", socket.display())]
    Ask { socket: PathBuf, message: String },
    #[error("containerd at {} answered version {text:?}: {source}", socket.display())]
    Answer {
        socket: PathBuf,
        text: String,
        #[source]
        source: VersionError,
    },
    #[error("run {} --version: {message}", binary.display())]
    Run { binary: PathBuf, message: String },
}

/// How the installer learns which containerd will read the config it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunningContainerd {
    /// Ask the daemon on its API socket: this host path, else the address containerd's config
    /// sets, else [`DEFAULT_ADDRESS`].
    Ask { address: Option<PathBuf> },
    /// Named by the operator, for a node whose containerd does not run (an image being built).
    Given(ContainerdVersion),
}

/// The version of the node's containerd, and how it was learnt (for the report).
pub fn find(
    host: &HostRoot,
    how: &RunningContainerd,
) -> Result<(ContainerdVersion, String), InstallError> {
    match how {
        RunningContainerd::Given(version) => Ok((version.clone(), "as given".to_string())),
        RunningContainerd::Ask { address } => {
            let address = match address {
                Some(address) => address.clone(),
                None => configured_address(host)?.unwrap_or_else(|| DEFAULT_ADDRESS.into()),
            };
            let version = ask(&host.local(&address), DEFAULT_TIMEOUT)?;
            Ok((version, format!("answered at {}", address.display())))
        }
    }
}

/// The gRPC address of the node's main containerd config, when it sets one.
fn configured_address(host: &HostRoot) -> Result<Option<PathBuf>, InstallError> {
    let main = Path::new(CONTAINERD_CONFIG);
    let Some(text) = managed_file::read_text_optional(&host.local(main))? else {
        return Ok(None);
    };
    let doc = containerd_schema::parse(&text, main)?;
    Ok(address_in_config(&doc).map(PathBuf::from))
}

/// `containerd.services.version.v1.VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct VersionResponse {
    #[prost(string, tag = "1")]
    version: String,
    #[prost(string, tag = "2")]
    revision: String,
}

/// The gRPC address a containerd config sets: `[grpc] address` up to schema 3, the
/// `io.containerd.server.v1.grpc` plugin's `address` in schema 4.
pub fn address_in_config(doc: &DocumentMut) -> Option<String> {
    let plugin = doc
        .get("plugins")
        .and_then(|plugins| plugins.get("io.containerd.server.v1.grpc"))
        .and_then(|grpc| grpc.get("address"));
    let legacy = doc.get("grpc").and_then(|grpc| grpc.get("address"));
    plugin
        .or(legacy)
        .and_then(Item::as_str)
        .filter(|address| !address.is_empty())
        .map(|address| {
            address
                .strip_prefix("unix://")
                .unwrap_or(address)
                .to_string()
        })
}

/// Asks the daemon listening on `socket` (a path as seen from here, i.e. below the host root).
pub fn ask(socket: &Path, timeout: Duration) -> Result<ContainerdVersion, ProbeError> {
    let ask_error = |message: String| ProbeError::Ask {
        socket: socket.to_path_buf(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| ask_error(format!("start the async runtime: {error}")))?;
    let path = socket.to_path_buf();
    let answer = runtime.block_on(async move {
        let call = async {
            // tonic needs a URI; the connector ignores it and dials the socket.
            let channel = Endpoint::from_static("http://[::]:0")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|error| describe(&error))?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|error| describe(&error))?;
            let codec = tonic_prost::ProstCodec::<(), VersionResponse>::default();
            grpc.unary(
                tonic::Request::new(()),
                PathAndQuery::from_static(VERSION_METHOD),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
    });
    let answer = answer.map_err(ask_error)?;
    ContainerdVersion::parse(&answer.version).map_err(|source| ProbeError::Answer {
        socket: socket.to_path_buf(),
        text: answer.version,
        source,
    })
}

/// The version a containerd binary reports with `--version` (a path as seen from here).
pub fn binary_version(binary: &Path) -> Result<ContainerdVersion, ProbeError> {
    let run_error = |message: String| ProbeError::Run {
        binary: binary.to_path_buf(),
        message,
    };
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|error| run_error(error.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(run_error(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    ContainerdVersion::from_version_output(&stdout).map_err(|error| run_error(error.to_string()))
}

/// An error and its causes on one line: tonic's transport errors say little at the top.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Option<String> {
        address_in_config(&text.parse::<DocumentMut>().unwrap())
    }

    #[test]
    fn address_is_read_where_each_schema_keeps_it() {
        assert_eq!(address("version = 2\n"), None);
        assert_eq!(
            address("version = 2\n[grpc]\n  address = \"/run/k3s/containerd.sock\"\n").as_deref(),
            Some("/run/k3s/containerd.sock")
        );
        assert_eq!(
            address("version = 4\n[plugins.'io.containerd.server.v1.grpc']\naddress = 'unix:///run/c.sock'\n")
                .as_deref(),
            Some("/run/c.sock")
        );
        assert_eq!(address("[grpc]\naddress = \"\"\n"), None);
    }

    #[test]
    fn nobody_listening_is_an_error_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let error = ask(&socket, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "ask containerd at {} for its version: ",
                socket.display()
            )),
            "{error}"
        );
        assert!(error.contains("No such file or directory"), "{error}");
    }

    #[test]
    fn a_binary_that_is_not_containerd_is_refused() {
        let error = binary_version(Path::new("/bin/true"))
            .unwrap_err()
            .to_string();
        assert!(
            error
                .starts_with("run /bin/true --version: containerd version \"true (GNU coreutils) ")
                && error.ends_with("\" does not start with MAJOR.MINOR"),
            "{error}"
        );
    }
}
