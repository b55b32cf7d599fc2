//! The shim's lifecycle actions (`start`, `delete`, serve) as containerd drives them.
//!
//! `start` first runs the runc shim's own `start` (which writes `bundle/address`), then starts
//! or reuses nixlet's daemon for the same group of containers, and writes nixlet's address last,
//! so that containerd (also after a restart) talks to nixlet and nixlet to the runc shim.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::{Config, Error, Flags, StartOpts};
use tokio::io::AsyncReadExt;

use crate::bundle;
use crate::config::NodeConfig;
use crate::delegate::{self, ShimArgs, DELEGATE_ADDRESS_ENV};
use crate::task_service::NixletTask;

pub const RUNTIME_ID: &str = "io.containerd.nixlet.v2";

/// Spec annotations the runc shim groups containers by (one shim per pod); nixlet groups the
/// same way so each pod has one nixlet daemon in front of one runc shim.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The file the runc shim writes into the bundle at Create (the OCI runtime's root); without it
/// the runc shim's `delete` fails, because it never created the container.
const DELEGATE_RUNTIME_FILE: &str = "runtime";

/// How often the daemon checks that its runc shim is still there.
const DELEGATE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

pub struct NixletShim {
    args: ShimArgs,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for NixletShim {
    type T = NixletTask;

    async fn new(_runtime_id: &str, flags: &Flags, _config: &mut Config) -> Self {
        NixletShim {
            args: ShimArgs {
                namespace: flags.namespace.clone(),
                id: flags.id.clone(),
                address: flags.address.clone(),
                publish_binary: flags.publish_binary.clone(),
                bundle: flags.bundle.clone(),
                debug: flags.debug,
            },
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // containerd writes the handler's options to stdin; they are for nixlet, not for the
        // runc shim, and the library's `spawn` would try to decode them as runc options.
        let mut options = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut options)
            .await
            .map_err(|error| Error::Other(format!("nixlet: read runtime options: {error}")))?;

        let config =
            NodeConfig::load().map_err(|error| Error::Other(format!("nixlet: {error}")))?;
        let delegate_address = delegate::start(&config.runtime.delegate_shim, &self.args)
            .await
            .map_err(|error| Error::Other(format!("nixlet: {error}")))?;

        delegate::wait_serving(&delegate_address, &opts.id)
            .await
            .map_err(|error| Error::Other(format!("nixlet: {error}")))?;

        let grouping = format!("nixlet-{}", group_of_bundle(Path::new("."), &opts.id));
        let address = spawn(
            opts,
            &grouping,
            vec![(DELEGATE_ADDRESS_ENV, delegate_address.as_str())],
        )
        .await?;
        std::fs::write("address", &address)
            .map_err(|error| Error::Other(format!("nixlet: write bundle address: {error}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let config =
            NodeConfig::load().map_err(|error| Error::Other(format!("nixlet: {error}")))?;
        let bundle = if self.args.bundle.is_empty() {
            Path::new(".").to_path_buf()
        } else {
            Path::new(&self.args.bundle).to_path_buf()
        };
        if !bundle.join(DELEGATE_RUNTIME_FILE).exists() {
            // nixlet refused the Create, so the runc shim never saw this container and has
            // nothing to clean up; answer as the runc shim does for a container that is gone.
            tracing::info!(container = %self.args.id, "delete: the runc shim never created this container");
            return Ok(killed_response());
        }
        delegate::delete(&config.runtime.delegate_shim, &self.args)
            .await
            .map_err(|error| Error::Other(format!("nixlet: {error}")))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        // The runc shim publishes task events to containerd itself; nixlet has none of its own.
        let delegate_address = std::env::var(DELEGATE_ADDRESS_ENV).unwrap_or_default();
        tokio::spawn(exit_with_delegate(
            delegate_address.clone(),
            self.exit.clone(),
        ));
        NixletTask::new(
            delegate_address,
            self.args.namespace.clone(),
            self.exit.clone(),
        )
    }
}

/// What the runc shim answers `delete` with for a container it has no trace of: killed, now.
fn killed_response() -> DeleteResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The group id the runc shim will use for this bundle's container.
fn group_of_bundle(bundle: &Path, id: &str) -> String {
    bundle::read_spec(bundle)
        .ok()
        .and_then(|spec| {
            let annotations = spec.get("annotations")?.as_object()?;
            GROUP_ANNOTATIONS
                .iter()
                .find_map(|key| annotations.get(*key)?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| id.to_string())
}

/// A runc shim that died (OOM killer, SIGKILL) takes nixlet's daemon with it, so that
/// containerd sees the shim gone and cleans up, instead of talking to a proxy of nothing.
async fn exit_with_delegate(address: String, exit: Arc<ExitSignal>) {
    let socket = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_string();
    loop {
        tokio::time::sleep(DELEGATE_CHECK_INTERVAL).await;
        let socket = socket.clone();
        let alive = tokio::task::spawn_blocking(move || UnixStream::connect(socket).is_ok())
            .await
            .unwrap_or(true);
        if !alive {
            tracing::warn!(delegate = %address, "runc shim is gone; exiting");
            exit.signal();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_like_the_runc_shim() {
        let bundle = tempfile::tempdir().unwrap();
        assert_eq!(group_of_bundle(bundle.path(), "c1"), "c1");
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group_of_bundle(bundle.path(), "c1"), "pod1");
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g"}}"#,
        )
        .unwrap();
        assert_eq!(group_of_bundle(bundle.path(), "c1"), "g");
    }
}
