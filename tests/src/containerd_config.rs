//! The private containerd's config file (schema version 2, as containerd 1.6 reads it).

use std::path::{Path, PathBuf};

/// Handler names as a kubelet passes them (RuntimeClass handler).
pub const RUNC_HANDLER: &str = "runc";
pub const NIXLET_HANDLER: &str = "nixlet";

/// Every path a private containerd uses, all below one directory.
#[derive(Debug, Clone)]
pub struct ContainerdPaths {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    pub ttrpc_address: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub cni_bin: PathBuf,
    pub cni_conf: PathBuf,
    pub opt: PathBuf,
    /// runc's state root for the runc handler, so nothing lands in the host's /run/containerd/runc.
    pub runc_root: PathBuf,
}

impl ContainerdPaths {
    pub fn under(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            root: dir.join("root"),
            state: dir.join("state"),
            address: dir.join("containerd.sock"),
            ttrpc_address: dir.join("containerd.sock.ttrpc"),
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
            cni_bin: dir.join("cni/bin"),
            cni_conf: dir.join("cni/net.d"),
            opt: dir.join("opt"),
            runc_root: dir.join("runc"),
        }
    }

    /// Where the v2 runtime creates task bundles for the CRI namespace.
    pub fn bundles(&self) -> PathBuf {
        self.state.join("io.containerd.runtime.v2.task/k8s.io")
    }

    /// The bundle directory of one task.
    pub fn bundle(&self, container_id: &str) -> PathBuf {
        self.bundles().join(container_id)
    }
}

/// Renders the config. Plugins the tests never use are disabled to start faster and to avoid
/// touching host paths; CNI points at empty directories because every pod uses the host network.
pub fn render(paths: &ContainerdPaths, sandbox_image: &str, snapshotter: &str) -> String {
    let mut config = render_without_nixlet(paths, sandbox_image, snapshotter);
    config.push_str(&format!(
        r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{nixlet}]
      runtime_type = "io.containerd.nixlet.v2"
      pod_annotations = ["nixlet.dev/*", "flox.dev/*"]
      container_annotations = ["nixlet.dev/*", "flox.dev/*"]
"#,
        nixlet = NIXLET_HANDLER,
    ));
    config
}

/// The config of [`render`] as a node has it before nixlet is installed: the runc handler only.
/// What `nixlet node install` is tested on.
pub fn render_without_nixlet(
    paths: &ContainerdPaths,
    sandbox_image: &str,
    snapshotter: &str,
) -> String {
    let p = |path: &Path| path.display().to_string();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{ttrpc}"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # Without it runc fails on these VMs: negative oom_score_adj needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{runc}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{runc}.options]
        Root = "{runc_root}"
"#,
        root = p(&paths.root),
        state = p(&paths.state),
        address = p(&paths.address),
        ttrpc = p(&paths.ttrpc_address),
        opt = p(&paths.opt),
        cni_bin = p(&paths.cni_bin),
        cni_conf = p(&paths.cni_conf),
        runc_root = p(&paths.runc_root),
        runc = RUNC_HANDLER,
    )
}
