//! nixlet's `start` action, on every containerd from 1.6 to 2.x.
//!
//! containerd runs `containerd-shim-nixlet-v2 … start` in the bundle and reads its answer. nixlet
//! first runs the runc shim's own `start` with the same kind of input (flags and stdin options
//! for containerd up to 2.2, `BootstrapParams` for 2.3+, see `bootstrap`), reads the runc shim's
//! answer in whichever form it gives, then starts or reuses nixlet's daemon for the same group
//! of containers, writes nixlet's address into the bundle last, and answers in the form its
//! caller reads.
//!
//! The first container of a pod (its sandbox) takes that whole path. Every later one finds the
//! pod's two daemons already serving; then `start` only writes nixlet's address, which is all the
//! runc shim's `start` and a second nixlet daemon would have ended up doing, without starting
//! either process (a Go binary and a Rust one per container, on the path of every pod start).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;

use containerd_shim::Flags;
use nixlet_config::NodeConfig;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::bootstrap::{answer_for, socket_address, ShimEndpoint, StartInput, STDIN_LIMIT};
use crate::bundle;
use crate::delegate::{self, DelegateError, ShimArgs, DELEGATE_ADDRESS_ENV, DELEGATE_TASK_API_ENV};
use crate::runtime_options::start_options_for_delegate;

/// Spec annotations the runc shim groups containers by (one shim per pod); nixlet groups the
/// same way so each pod has one nixlet daemon in front of one runc shim.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The file in the bundle naming the shim socket containerd 1.x reconnects to after a restart,
/// and whose socket nixlet's daemon removes when it exits. (containerd 2.x keeps the answer in
/// `bootstrap.json` itself.)
const ADDRESS_FILE: &str = "address";

/// Where the shim library looks for containerd's ttrpc address (events are published there).
const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("read stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{0}")]
    Config(#[from] nixlet_config::ConfigError),
    #[error("runc options for the runc shim: {0}")]
    Options(#[source] containerd_shim::protos::protobuf::Error),
    #[error("{0}")]
    Delegate(#[from] DelegateError),
    #[error("start nixlet's daemon: {0}")]
    Daemon(#[source] std::io::Error),
    #[error("nixlet's daemon exited at once ({0}); its log is containerd's")]
    DaemonExited(std::process::ExitStatus),
    #[error("write bundle address: {0}")]
    Address(#[source] std::io::Error),
}

/// Runs `start` in the current directory (the bundle) and returns what to print on stdout.
pub async fn run(flags: &Flags) -> Result<Vec<u8>, StartError> {
    let mut stdin = Vec::new();
    tokio::io::stdin()
        .take(STDIN_LIMIT)
        .read_to_end(&mut stdin)
        .await
        .map_err(StartError::Stdin)?;
    let input = StartInput::detect(&stdin, &flags.id, &flags.namespace);
    tracing::debug!(container = %flags.id, protocol = input.protocol(), containerd = input.containerd_version().unwrap_or("before 2.3"), "start");

    let group = group_of_bundle(Path::new("."), &flags.id);
    let pod = PodShims::of(&input, flags, &group);
    if pod.both_serving().await {
        tracing::debug!(container = %flags.id, address = %pod.nixlet, "start: the pod's shims are running; reusing them");
        write_address(&pod.nixlet)?;
        return Ok(answer_for(&input, &pod.nixlet));
    }

    let config = NodeConfig::load()?;
    let options = start_options_for_delegate(input.runtime_options(), &config.runtime.runc_options)
        .map_err(StartError::Options)?;
    let args = ShimArgs::from(flags);
    let delegate = delegate::start(
        &config.runtime.delegate_shim,
        &args,
        input.for_delegate(options.as_ref()),
    )
    .await?;

    match serve_beside(&delegate, &input, flags, &pod.nixlet).await {
        Ok(()) => {
            write_address(&pod.nixlet)?;
            Ok(answer_for(&input, &pod.nixlet))
        }
        Err(error) => {
            // Nothing else would ever stop a runc shim whose nixlet never came up.
            delegate::shutdown_quietly(&delegate, &flags.id).await;
            Err(error)
        }
    }
}

/// Starts nixlet's daemon while the runc shim's comes up: neither waits for the other, only the
/// address file must wait for the runc daemon (see `delegate::wait_serving`).
async fn serve_beside(
    delegate: &ShimEndpoint,
    input: &StartInput,
    flags: &Flags,
    socket: &str,
) -> Result<(), StartError> {
    let (serving, daemon) = tokio::join!(
        delegate::wait_serving(delegate, &flags.id),
        spawn_daemon(flags, input, socket, delegate)
    );
    // A nixlet daemon started for a runc shim that never answered exits on its own once it
    // sees the runc socket gone (`shim::exit_with_delegate`).
    serving?;
    daemon
}

/// Runs this binary as the pod's nixlet daemon on `socket`; returns once it serves.
async fn spawn_daemon(
    flags: &Flags,
    input: &StartInput,
    socket: &str,
    delegate: &ShimEndpoint,
) -> Result<(), StartError> {
    let binary = std::env::current_exe().map_err(StartError::Daemon)?;
    let mut command = Command::new(binary);
    command
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &flags.address,
            "-socket",
            socket,
        ])
        .env(DELEGATE_ADDRESS_ENV, &delegate.address)
        .env(
            DELEGATE_TASK_API_ENV,
            delegate.task_api.version().to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // containerd reads `start`'s stdout and stderr together as its answer (2.x); nothing of
        // the daemon may reach either.
        .stderr(Stdio::null())
        // As the runc shim does: a signal to `start`'s process group must not reach the daemon.
        .process_group(0);
    if flags.debug {
        command.arg("-debug");
    }
    if let Some(ttrpc) = input.ttrpc_address() {
        command.env(TTRPC_ADDRESS_ENV, ttrpc);
    }
    let mut child = command.spawn().map_err(StartError::Daemon)?;
    if let Some(pid) = child.id() {
        if let Err(error) = containerd_shim::cgroup::adjust_oom_score(pid) {
            tracing::warn!(pid, error = %error, "cannot adjust the oom score of nixlet's daemon");
        }
    }
    // The daemon closes its stdout once its server listens.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    tokio::io::copy(&mut stdout, &mut tokio::io::sink())
        .await
        .map_err(StartError::Daemon)?;
    if let Some(status) = child.try_wait().map_err(StartError::Daemon)? {
        if !status.success() {
            return Err(StartError::DaemonExited(status));
        }
    }
    Ok(())
}

fn write_address(address: &str) -> Result<(), StartError> {
    std::fs::write(ADDRESS_FILE, address).map_err(StartError::Address)
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
    fn of(input: &StartInput, flags: &Flags, group: &str) -> Self {
        let root = input.socket_root();
        PodShims {
            nixlet: socket_address(
                root,
                &flags.address,
                &flags.namespace,
                &nixlet_grouping(group),
            ),
            runc: socket_address(root, &flags.address, &flags.namespace, group),
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
pub(crate) fn group_of_bundle(bundle: &Path, id: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::{BootstrapParams, DEFAULT_SOCKET_ROOT};

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

    fn flags() -> Flags {
        Flags {
            id: "c2".into(),
            address: "/run/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_pod_shims_are_nixlets_and_the_runc_shims_group_sockets() {
        let legacy = StartInput::Legacy { options: None };
        let shims = PodShims::of(&legacy, &flags(), "pod1");
        let address = "/run/containerd/containerd.sock";
        assert_eq!(
            shims.nixlet,
            socket_address(DEFAULT_SOCKET_ROOT, address, "k8s.io", "nixlet-pod1")
        );
        assert_eq!(
            shims.runc,
            socket_address(DEFAULT_SOCKET_ROOT, address, "k8s.io", "pod1")
        );
        assert_ne!(shims.nixlet, shims.runc);

        let with_socket_dir = StartInput::Bootstrap(BootstrapParams {
            socket_dir: Some("/run/k/s".into()),
            ..Default::default()
        });
        let shims = PodShims::of(&with_socket_dir, &flags(), "pod1");
        assert!(shims.nixlet.starts_with("unix:///run/k/s/"));
        assert!(shims.runc.starts_with("unix:///run/k/s/"));
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
