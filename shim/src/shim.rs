//! The shim's lifecycle actions (`start`, `delete`, serve) as containerd drives them.
//!
//! `start` first runs the runc shim's own `start` (which writes `bundle/address`), then starts
//! or reuses nixlet's daemon for the same group of containers, and writes nixlet's address last,
//! so that containerd (also after a restart) talks to nixlet and nixlet to the runc shim.
//!
//! The first container of a pod (its sandbox) takes that whole path. Every later one finds the
//! pod's two daemons already serving; then `start` only writes nixlet's address, which is all the
//! runc shim's `start` and a second nixlet daemon would have ended up doing, without starting
//! either process (a Go binary and a Rust one per container, on the path of every pod start).

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
use containerd_shim::{socket_address, Config, Error, Flags, StartOpts};
use tokio::io::AsyncReadExt;

use crate::bundle;
use nixlet_config::NodeConfig;
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

        let group = group_of_bundle(Path::new("."), &opts.id);
        let running = PodShims::of(&opts, &group);
        if running.both_serving().await {
            tracing::debug!(container = %opts.id, address = %running.nixlet, "start: the pod's shims are running; reusing them");
            std::fs::write("address", &running.nixlet)
                .map_err(|error| Error::Other(format!("nixlet: write bundle address: {error}")))?;
            return Ok(running.nixlet);
        }

        let config =
            NodeConfig::load().map_err(|error| Error::Other(format!("nixlet: {error}")))?;
        let delegate_address = delegate::start(&config.runtime.delegate_shim, &self.args)
            .await
            .map_err(|error| Error::Other(format!("nixlet: {error}")))?;

        // nixlet's daemon starts while the runc shim's comes up: neither waits for the other,
        // only the address file must wait for the runc daemon (see `wait_serving`).
        let id = opts.id.clone();
        let grouping = nixlet_grouping(&group);
        let (serving, address) = tokio::join!(
            delegate::wait_serving(&delegate_address, &id),
            spawn(
                opts,
                &grouping,
                vec![(DELEGATE_ADDRESS_ENV, delegate_address.as_str())],
            )
        );
        // A nixlet daemon started for a runc shim that never answered exits on its own once it
        // sees the runc socket gone (`exit_with_delegate`).
        serving.map_err(|error| Error::Other(format!("nixlet: {error}")))?;
        let address = address?;
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

/// nixlet's own group id for a runc shim group: another socket than the runc shim's.
fn nixlet_grouping(group: &str) -> String {
    format!("nixlet-{group}")
}

/// The sockets of one pod's (one group's) nixlet daemon and runc shim daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodShims {
    nixlet: String,
    /// Where the runc shim's `start` puts its daemon: the Go shim derives the socket the same
    /// way from the same inputs.
    runc: String,
}

impl PodShims {
    fn of(opts: &StartOpts, group: &str) -> Self {
        PodShims {
            nixlet: socket_address(&opts.address, &opts.namespace, &nixlet_grouping(group)),
            runc: socket_address(&opts.address, &opts.namespace, group),
        }
    }

    /// Both accept connections. A runc shim that died is not reused even while its nixlet
    /// daemon has not noticed yet: the full path then starts a new one, as the runc shim's own
    /// `start` would.
    async fn both_serving(&self) -> bool {
        let sockets = [self.nixlet.clone(), self.runc.clone()];
        tokio::task::spawn_blocking(move || {
            sockets.iter().all(|address| {
                UnixStream::connect(address.strip_prefix("unix://").unwrap_or(address)).is_ok()
            })
        })
        .await
        .unwrap_or(false)
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

    fn start_opts(address: &str) -> StartOpts {
        StartOpts {
            id: "c2".into(),
            address: address.into(),
            namespace: "k8s.io".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_pod_shims_are_nixlets_and_the_runc_shims_group_sockets() {
        let shims = PodShims::of(&start_opts("/run/containerd/containerd.sock"), "pod1");
        assert_eq!(
            shims.nixlet,
            socket_address("/run/containerd/containerd.sock", "k8s.io", "nixlet-pod1")
        );
        assert_eq!(
            shims.runc,
            socket_address("/run/containerd/containerd.sock", "k8s.io", "pod1")
        );
        assert_ne!(shims.nixlet, shims.runc);
    }

    #[tokio::test]
    async fn shims_are_reused_only_while_both_accept_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let shims = PodShims {
            nixlet: format!("unix://{}", path("nixlet.sock")),
            runc: format!("unix://{}", path("runc.sock")),
        };
        assert!(!shims.both_serving().await, "neither socket exists");
        let nixlet = std::os::unix::net::UnixListener::bind(path("nixlet.sock")).unwrap();
        assert!(!shims.both_serving().await, "the runc shim is not there");
        let runc = std::os::unix::net::UnixListener::bind(path("runc.sock")).unwrap();
        assert!(shims.both_serving().await);
        // A dead runc shim leaves its socket file behind, refusing connections.
        drop(runc);
        assert!(!shims.both_serving().await, "the runc shim died");
        drop(nixlet);
    }
}
