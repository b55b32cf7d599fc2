//! nixlet's `delete` action: containerd runs it for each container of a shim that is gone (it
//! died, or it cannot be reached after a containerd restart), expecting everything of that
//! container cleaned up within a few seconds.
//!
//! When nixlet's daemon died, the pod's runc shim is still running, with the container in its
//! table: the runc shim's own `delete` action would remove the container from runc but leave
//! that daemon running forever (containerd's cleanup of a dead runc shim has no daemon left to
//! stop). So nixlet deletes the container through the runc shim's task API (kill, wait, delete)
//! and then asks it to shut down, which it does once its last container is gone; only a runc
//! shim that is gone too gets the runc shim's `delete` action. The container's GC root and
//! nixlet's dead socket go as well.
//!
//! The node config may not parse at this point (it is read again for every action); cleanup
//! then uses the defaults instead of failing, or containerd could remove no nixlet container.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim::protos::api::{
    DeleteRequest, DeleteResponse, Empty, KillRequest, ShutdownRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc::context::with_timeout;
use nixlet_config::NodeConfig;

use crate::bootstrap::{socket_address, DEFAULT_SOCKET_ROOT};
use crate::delegate::{self, DelegateClient, DelegateError, ShimArgs};
use crate::gc_root;
use crate::start::group_of_bundle;

/// The file the runc shim writes into the bundle at Create (the OCI runtime's root); without it
/// the runc shim never created the container.
const DELEGATE_RUNTIME_FILE: &str = "runtime";

/// Where containerd 2.3+ shims record a `socket_dir` in the bundle of the container they started.
const SOCKET_DIR_LINK: &str = "s";

/// Each RPC of the cleanup: containerd gives the whole `delete` action 5 seconds.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

const SIGKILL: u32 = 9;

/// Cleans up after the container of `args` and returns what containerd records as its exit.
pub async fn delete(args: &ShimArgs) -> Result<DeleteResponse, DelegateError> {
    let config = NodeConfig::load().unwrap_or_else(|error| {
        tracing::warn!(error = %error, "delete: node config unreadable; cleaning up with the defaults");
        NodeConfig::default()
    });
    let bundle = bundle_of(args);
    let runc_shim = runc_shim_of(args, &bundle).await;
    let created = bundle.join(DELEGATE_RUNTIME_FILE).exists();

    let response = match (&runc_shim, created) {
        // nixlet refused the Create (or died before forwarding it): the runc shim never saw
        // this container. Answer as the runc shim does for a container that is gone.
        (_, false) => killed_response(),
        (Some(client), true) => match delete_through(client, &args.id).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(container = %args.id, error = %error, "delete through the runc shim failed; running its delete action");
                let response = delegate::delete(&config.runtime.delegate_shim, args).await?;
                // runc no longer has the container; this drops it from the runc shim's table.
                let _ = client
                    .call::<_, DeleteResponse>(rpc_context(), "Delete", &delete_request(&args.id))
                    .await;
                response
            }
        },
        (None, true) => delegate::delete(&config.runtime.delegate_shim, args).await?,
    };
    if let Some(client) = &runc_shim {
        // The runc shim exits once it serves no container; until then this is a no-op.
        let request = ShutdownRequest {
            id: args.id.clone(),
            ..Default::default()
        };
        let answer = client
            .call::<_, Empty>(rpc_context(), "Shutdown", &request)
            .await;
        tracing::info!(container = %args.id, answered = answer.is_ok(), "delete: asked the pod's runc shim to exit once idle");
    }
    if let Err(error) = gc_root::remove_root(&config.gc_roots_dir, &args.namespace, &args.id) {
        tracing::warn!(container = %args.id, error = %error, "delete: cannot remove gc root");
    }
    remove_dead_socket(&bundle);
    Ok(response)
}

async fn delete_through(client: &DelegateClient, id: &str) -> Result<DeleteResponse, String> {
    let kill = KillRequest {
        id: id.to_string(),
        signal: SIGKILL,
        all: true,
        ..Default::default()
    };
    // An exited container refuses the kill; what matters is that it is not running.
    let _ = client.call::<_, Empty>(rpc_context(), "Kill", &kill).await;
    let wait = WaitRequest {
        id: id.to_string(),
        ..Default::default()
    };
    client
        .call::<_, WaitResponse>(rpc_context(), "Wait", &wait)
        .await
        .map_err(|error| format!("wait: {error}"))?;
    client
        .call::<_, DeleteResponse>(rpc_context(), "Delete", &delete_request(id))
        .await
        .map_err(|error| format!("delete: {error}"))
}

fn delete_request(id: &str) -> DeleteRequest {
    DeleteRequest {
        id: id.to_string(),
        ..Default::default()
    }
}

fn rpc_context() -> containerd_shim::protos::ttrpc::context::Context {
    with_timeout(RPC_TIMEOUT.as_nanos() as i64)
}

fn bundle_of(args: &ShimArgs) -> PathBuf {
    if args.bundle.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(&args.bundle)
    }
}

/// The pod's runc shim, if it still serves.
async fn runc_shim_of(args: &ShimArgs, bundle: &Path) -> Option<DelegateClient> {
    let group = group_of_bundle(bundle, &args.id);
    let root = std::fs::read_link(bundle.join(SOCKET_DIR_LINK))
        .ok()
        .map(|dir| dir.display().to_string())
        .unwrap_or_else(|| DEFAULT_SOCKET_ROOT.to_string());
    let address = socket_address(&root, &args.address, &args.namespace, &group);
    match DelegateClient::connect_probing(&address, &args.id).await {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::info!(container = %args.id, runc_shim = %address, error = %error, "delete: the pod's runc shim is not serving");
            None
        }
    }
}

/// nixlet's socket named in the bundle, when nobody listens on it any more.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://").to_string();
    if !path.is_empty() && UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
}

/// What the runc shim answers `delete` with for a container it has no trace of: killed, now.
fn killed_response() -> DeleteResponse {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    DeleteResponse {
        exit_status: 128 + SIGKILL,
        exited_at: MessageField::some(Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}
