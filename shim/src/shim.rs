//! The shim library's lifecycle hooks: nixlet's daemon (serving the task API in front of the
//! runc shim) and the `delete` cleanup containerd runs after a shim or container is gone.
//! `start` and `-info` are nixlet's own (`start.rs`, `info.rs`): their input and answer differ
//! between containerd versions in ways the library does not know.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::{Config, Error, Flags, StartOpts};

use crate::bootstrap::{ShimEndpoint, TaskApi};
use crate::cleanup;
use crate::delegate::{ShimArgs, DELEGATE_ADDRESS_ENV, DELEGATE_TASK_API_ENV};
use crate::task_service::NixletTask;

pub const RUNTIME_ID: &str = "io.containerd.nixlet.v2";

/// How often the daemon checks that its runc shim is still there.
const DELEGATE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

pub struct NixletShim {
    args: ShimArgs,
    exit: Arc<ExitSignal>,
}

impl From<&Flags> for ShimArgs {
    fn from(flags: &Flags) -> Self {
        ShimArgs {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            address: flags.address.clone(),
            publish_binary: flags.publish_binary.clone(),
            bundle: flags.bundle.clone(),
            debug: flags.debug,
        }
    }
}

#[async_trait]
impl Shim for NixletShim {
    type T = NixletTask;

    async fn new(_runtime_id: &str, flags: &Flags, _config: &mut Config) -> Self {
        NixletShim {
            args: ShimArgs::from(flags),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, _opts: StartOpts) -> containerd_shim::Result<String> {
        // main.rs runs `start` itself, before the library sees the command line.
        Err(Error::Unimplemented(
            "nixlet: start is run by nixlet's own bootstrap".to_string(),
        ))
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        cleanup::delete(&self.args)
            .await
            .map_err(|error| Error::Other(format!("nixlet: {error}")))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, _publisher: RemotePublisher) -> Self::T {
        // The runc shim publishes task events to containerd itself; nixlet has none of its own.
        let endpoint = delegate_from_env();
        tokio::spawn(exit_with_delegate(
            endpoint.address.clone(),
            self.exit.clone(),
        ));
        NixletTask::new(endpoint, self.args.namespace.clone(), self.exit.clone())
    }
}

/// The runc shim `start` handed this daemon through its environment.
fn delegate_from_env() -> ShimEndpoint {
    let address = std::env::var(DELEGATE_ADDRESS_ENV).unwrap_or_default();
    let task_api = std::env::var(DELEGATE_TASK_API_ENV)
        .ok()
        .and_then(|version| version.parse().ok())
        .and_then(TaskApi::from_version)
        .unwrap_or(TaskApi::V2);
    ShimEndpoint { address, task_api }
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
