//! The private containerd's config file: schema 2 for containerd 1.6 and 1.7, schema 3 (CRI split
//! into `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`) for 2.x.

use std::path::{Path, PathBuf};

use crate::containerd_version;

/// Handler names as a kubelet passes them (RuntimeClass handler).
pub const RUNC_HANDLER: &str = "runc";
pub const NIXLET_HANDLER: &str = "nixlet";
/// nixlet's shim declared as a runc-type runtime with `runtime_path` (README, "containerd
/// 2.0-2.3"): containerd then hands it the handler's runc options itself and, before 2.4,
/// asks it for the runtime's features, which it asks only of runc-type runtimes.
pub const NIXLET_RUNC_TYPE_HANDLER: &str = "nixlet-runc-type";

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
    /// NRI's socket, private to this containerd (see [`render_without_nixlet`]).
    pub nri_socket: PathBuf,
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
            nri_socket: dir.join("nri.sock"),
        }
    }

    /// runc's state root for the runc-type nixlet handler, set in that handler's own options.
    pub fn runc_type_root(&self) -> PathBuf {
        self.dir.join("runc-nixlet-runc-type")
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
/// `shim` is nixlet's shim binary, for the runc-type handler's `runtime_path`.
pub fn render(
    paths: &ContainerdPaths,
    sandbox_image: &str,
    snapshotter: &str,
    shim: &Path,
) -> String {
    let mut config = render_without_nixlet(paths, sandbox_image, snapshotter);
    config.push_str(&format!(
        r#"    [{runtimes}.{nixlet}]
      runtime_type = "io.containerd.nixlet.v2"
      pod_annotations = ["nixlet.dev/*", "flox.dev/*"]
      container_annotations = ["nixlet.dev/*", "flox.dev/*"]
    [{runtimes}.{runc_type}]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{shim}"
      pod_annotations = ["nixlet.dev/*", "flox.dev/*"]
      container_annotations = ["nixlet.dev/*", "flox.dev/*"]
      [{runtimes}.{runc_type}.options]
        Root = "{runc_type_root}"
"#,
        runtimes = runtimes_table(schema_3()),
        nixlet = NIXLET_HANDLER,
        runc_type = NIXLET_RUNC_TYPE_HANDLER,
        shim = shim.display(),
        runc_type_root = paths.runc_type_root().display(),
    ));
    config
}

/// Whether the `containerd` on PATH reads schema 3 (see [`containerd_version`]).
fn schema_3() -> bool {
    containerd_version::installed().is_ok_and(|version| version.uses_schema_3())
}

/// Where CRI's runtimes (handlers) live in the config.
pub fn runtimes_table(schema_3: bool) -> &'static str {
    if schema_3 {
        "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"
    } else {
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"
    }
}

/// The config of [`render`] as a node has it before nixlet is installed: the runc handler only.
/// What `nixlet node install` is tested on.
pub fn render_without_nixlet(
    paths: &ContainerdPaths,
    sandbox_image: &str,
    snapshotter: &str,
) -> String {
    let (version, cri) = if schema_3() {
        (3, cri_schema_3(paths, sandbox_image, snapshotter))
    } else {
        (2, cri_schema_2(paths, sandbox_image, snapshotter))
    };
    let p = |path: &Path| path.display().to_string();
    format!(
        r#"version = {version}
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

# NRI is on by default from containerd 2.0 and listens on one host-wide socket: two test nodes
# starting at once race for it ("bind: address already in use"). Each node gets its own; the
# default (on in 2.x, off in 1.7, absent in 1.6) stays as a real node has it.
[plugins."io.containerd.nri.v1.nri"]
  socket_path = "{nri_socket}"
  plugin_path = "{nri_plugins}"
  plugin_config_path = "{nri_plugin_config}"

{cri}"#,
        root = p(&paths.root),
        state = p(&paths.state),
        address = p(&paths.address),
        ttrpc = p(&paths.ttrpc_address),
        opt = p(&paths.opt),
        nri_socket = p(&paths.nri_socket),
        nri_plugins = p(&paths.dir.join("nri/plugins")),
        nri_plugin_config = p(&paths.dir.join("nri/conf.d")),
    )
}

fn cri_schema_2(paths: &ContainerdPaths, sandbox_image: &str, snapshotter: &str) -> String {
    let p = |path: &Path| path.display().to_string();
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
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
        cni_bin = p(&paths.cni_bin),
        cni_conf = p(&paths.cni_conf),
        runc_root = p(&paths.runc_root),
        runc = RUNC_HANDLER,
    )
}

fn cri_schema_3(paths: &ContainerdPaths, sandbox_image: &str, snapshotter: &str) -> String {
    let p = |path: &Path| path.display().to_string();
    format!(
        r#"[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "{snapshotter}"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{sandbox_image}"

[plugins.'io.containerd.cri.v1.runtime']
  # Without it runc fails on these VMs: negative oom_score_adj needs CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "{runc}"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{runc}]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{runc}.options]
        Root = "{runc_root}"
"#,
        cni_bin = p(&paths.cni_bin),
        cni_conf = p(&paths.cni_conf),
        runc_root = p(&paths.runc_root),
        runc = RUNC_HANDLER,
    )
}
