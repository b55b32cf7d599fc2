//! The runc shim's binary actions (`start`, `delete`, `-info`), run with the arguments and the
//! kind of stdin containerd gave nixlet, and the first RPCs to its daemon.

use std::process::Stdio;
use std::time::Duration;

use containerd_shim::protos::api::Empty;
use containerd_shim::protos::api::{
    ConnectRequest, ConnectResponse, DeleteResponse, ShutdownRequest,
};
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::context::with_timeout;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::bootstrap::{parse_shim_answer, ShimEndpoint};

use super::{DelegateClient, DelegateError};

/// How long a freshly started runc shim may take to serve its first RPC.
const SERVING_TIMEOUT: Duration = Duration::from_secs(10);

/// A runc shim action that runs longer than this is killed: containerd's own deadline for a
/// shim's `start` is shorter than the kubelet's, and a hung action must not hold a pod.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Runs the runc shim's `start` in the current directory (the bundle), with `stdin` in the form
/// containerd gave nixlet's own `start`, and reads its answer in whichever form it gives it.
pub async fn start(
    binary: &str,
    args: &ShimArgs,
    stdin: Vec<u8>,
) -> Result<ShimEndpoint, DelegateError> {
    let stdout = run(binary, "start", &args.to_argv("start"), stdin).await?;
    parse_shim_answer(&stdout).map_err(|source| DelegateError::Answer {
        binary: binary.to_string(),
        action: "start",
        source,
    })
}

/// Runs the runc shim's `delete`, which cleans up after a dead shim, and returns its answer.
pub async fn delete(binary: &str, args: &ShimArgs) -> Result<DeleteResponse, DelegateError> {
    let stdout = run(binary, "delete", &args.to_argv("delete"), Vec::new()).await?;
    DeleteResponse::parse_from_bytes(&stdout).map_err(|error| DelegateError::BadOutput {
        binary: binary.to_string(),
        action: "delete",
        detail: error.to_string(),
    })
}

/// Runs `<runc shim> -info` with runc options on stdin and returns its `RuntimeInfo` bytes, so
/// that containerd 2.x sees the features (recursive read-only mounts, user namespaces) of the
/// OCI runtime nixlet's containers really run with.
pub async fn info(binary: &str, stdin: Vec<u8>) -> Result<Vec<u8>, DelegateError> {
    run(binary, "-info", &["-info".to_string()], stdin).await
}

/// Waits until the runc shim's daemon answers an RPC. Its daemon reads `bundle/address` while it
/// starts up (and later removes the socket named there); nixlet may overwrite that file with its
/// own address only after that read, or the runc shim's socket outlives it.
pub async fn wait_serving(
    endpoint: &ShimEndpoint,
    id: &str,
) -> Result<DelegateClient, DelegateError> {
    let client = DelegateClient::connect(endpoint).await?;
    let request = ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    client
        .call::<_, ConnectResponse>(
            with_timeout(SERVING_TIMEOUT.as_nanos() as i64),
            "Connect",
            &request,
        )
        .await
        .map_err(|source| DelegateError::Connect {
            address: endpoint.address.clone(),
            source,
        })?;
    Ok(client)
}

/// Asks a runc shim that serves no container to exit: after a `start` that failed once the runc
/// shim was running, nothing else would ever stop it.
pub async fn shutdown_quietly(endpoint: &ShimEndpoint, id: &str) {
    let Ok(client) = DelegateClient::connect(endpoint).await else {
        return;
    };
    let request = ShutdownRequest {
        id: id.to_string(),
        now: true,
        ..Default::default()
    };
    let answer = client
        .call::<_, Empty>(
            with_timeout(SERVING_TIMEOUT.as_nanos() as i64),
            "Shutdown",
            &request,
        )
        .await;
    tracing::info!(delegate = %endpoint.address, answered = answer.is_ok(), "asked the runc shim of a failed start to exit");
}

async fn run(
    binary: &str,
    action: &'static str,
    argv: &[String],
    stdin: Vec<u8>,
) -> Result<Vec<u8>, DelegateError> {
    let spawn_error = |source| DelegateError::Spawn {
        binary: binary.to_string(),
        action,
        source,
    };
    let mut child = Command::new(binary)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let mut input = child.stdin.take().expect("stdin is piped");
    // The runc shim reads stdin to its end before it acts; an empty stdin is an immediate EOF.
    let feed = async move {
        input.write_all(&stdin).await?;
        input.shutdown().await
    };
    let (fed, output) = tokio::time::timeout(ACTION_TIMEOUT, async {
        tokio::join!(feed, child.wait_with_output())
    })
    .await
    .map_err(|_| {
        spawn_error(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", ACTION_TIMEOUT.as_secs()),
        ))
    })?;
    let output = output.map_err(spawn_error)?;
    if !output.status.success() {
        return Err(DelegateError::Failed {
            binary: binary.to_string(),
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    // A shim that exits at once may close stdin before reading it all; only its answer counts.
    if let Err(error) = fed {
        tracing::debug!(binary, action, error = %error, "runc shim did not read all of stdin");
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
