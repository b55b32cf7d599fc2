//! The stock `containerd-shim-runc-v2` that does the real work for every container.
//!
//! nixlet runs its `start` and `delete` actions with the arguments containerd gave nixlet, and
//! talks to the daemon it starts over ttrpc.

use std::process::Stdio;

use std::time::Duration;

use containerd_shim::protos::api::{ConnectRequest, DeleteResponse};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::{Client, TaskClient};
use containerd_shim::protos::ttrpc::context::with_timeout;
use tokio::process::Command;

/// Environment variable through which `start` tells nixlet's daemon where the runc shim listens.
pub const DELEGATE_ADDRESS_ENV: &str = "NIXLET_DELEGATE_ADDRESS";

/// How long a freshly started runc shim may take to serve its first RPC.
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("run {binary} {action}: {source}")]
    Spawn {
        binary: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} {action} failed ({status}): {stderr}")]
    Failed {
        binary: String,
        action: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{binary} {action} printed an unreadable answer: {detail}")]
    BadOutput {
        binary: String,
        action: &'static str,
        detail: String,
    },
    #[error("connect to runc shim at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: containerd_shim::protos::ttrpc::Error,
    },
}

/// The flags containerd passes to every shim action, as the runc shim expects them.
#[derive(Debug, Clone, Default)]
pub struct ShimArgs {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub debug: bool,
}

impl ShimArgs {
    pub fn to_argv(&self, action: &str) -> Vec<String> {
        let mut argv = vec![
            "-namespace".to_string(),
            self.namespace.clone(),
            "-address".to_string(),
            self.address.clone(),
            "-publish-binary".to_string(),
            self.publish_binary.clone(),
            "-id".to_string(),
            self.id.clone(),
        ];
        if !self.bundle.is_empty() {
            argv.extend(["-bundle".to_string(), self.bundle.clone()]);
        }
        if self.debug {
            argv.push("-debug".to_string());
        }
        argv.push(action.to_string());
        argv
    }
}

/// Runs the runc shim's `start` in the current directory (the bundle) and returns the ttrpc
/// address of its daemon. Its stdin gets nothing: containerd's options for nixlet are of a type
/// the runc shim cannot decode.
pub async fn start(binary: &str, args: &ShimArgs) -> Result<String, DelegateError> {
    let stdout = run(binary, "start", args).await?;
    let address = String::from_utf8_lossy(&stdout).trim().to_string();
    if address.is_empty() {
        return Err(DelegateError::BadOutput {
            binary: binary.to_string(),
            action: "start",
            detail: "empty address".to_string(),
        });
    }
    Ok(address)
}

/// Runs the runc shim's `delete`, which cleans up after a dead shim, and returns its answer.
pub async fn delete(binary: &str, args: &ShimArgs) -> Result<DeleteResponse, DelegateError> {
    let stdout = run(binary, "delete", args).await?;
    DeleteResponse::parse_from_bytes(&stdout).map_err(|error| DelegateError::BadOutput {
        binary: binary.to_string(),
        action: "delete",
        detail: error.to_string(),
    })
}

/// Waits until the runc shim's daemon answers an RPC. Its daemon reads `bundle/address` while it
/// starts up (and later removes the socket named there); nixlet may overwrite that file with its
/// own address only after that read, or the runc shim's socket outlives it.
pub async fn wait_serving(address: &str, id: &str) -> Result<(), DelegateError> {
    let client = connect(address).await?;
    let request = ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    client
        .connect(with_timeout(SERVING_TIMEOUT.as_nanos() as i64), &request)
        .await
        .map(|_| ())
        .map_err(|source| DelegateError::Connect {
            address: address.to_string(),
            source,
        })
}

pub async fn connect(address: &str) -> Result<TaskClient, DelegateError> {
    let client = Client::connect(address)
        .await
        .map_err(|source| DelegateError::Connect {
            address: address.to_string(),
            source,
        })?;
    Ok(TaskClient::new(client))
}

async fn run(
    binary: &str,
    action: &'static str,
    args: &ShimArgs,
) -> Result<Vec<u8>, DelegateError> {
    let output = Command::new(binary)
        .args(args.to_argv(action))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| DelegateError::Spawn {
            binary: binary.to_string(),
            action,
            source,
        })?;
    if !output.status.success() {
        return Err(DelegateError::Failed {
            binary: binary.to_string(),
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_matches_what_containerd_passes_a_shim() {
        let args = ShimArgs {
            namespace: "k8s.io".into(),
            id: "abc".into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            bundle: String::new(),
            debug: true,
        };
        assert_eq!(
            args.to_argv("start"),
            [
                "-namespace",
                "k8s.io",
                "-address",
                "/run/containerd/containerd.sock",
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                "abc",
                "-debug",
                "start"
            ]
        );
        let with_bundle = ShimArgs {
            bundle: "/run/b".into(),
            debug: false,
            ..args
        };
        assert_eq!(
            with_bundle.to_argv("delete")[8..],
            ["-bundle", "/run/b", "delete"]
        );
    }
}
