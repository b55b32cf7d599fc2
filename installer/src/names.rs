//! Names and host paths the installer agrees on with containerd, the shim and the DaemonSet.

/// The CRI handler and the key of containerd's runtime table (`RuntimeClass.handler`).
pub const RUNTIME_NAME: &str = "nixlet";
/// containerd derives the shim binary name from this: `containerd-shim-nixlet-v2`.
pub const RUNTIME_TYPE: &str = "io.containerd.nixlet.v2";
/// containerd's runc runtime: nixlet's shim may also be declared as one, at its `runtime_path`.
pub const RUNC_RUNTIME_TYPE: &str = "io.containerd.runc.v2";
/// containerd copies only annotations its runtime table allows into the OCI spec; the shim
/// reads these two prefixes.
pub const ANNOTATION_PATTERNS: [&str; 2] = ["nixlet.dev/*", "flox.dev/*"];

pub const SHIM_BINARY: &str = "containerd-shim-nixlet-v2";
pub const CLI_BINARY: &str = "nixlet";
/// Both must sit on containerd's `PATH`; systemd's default `PATH` has this directory and
/// package managers never write to it.
pub const DEFAULT_BINARY_DIR: &str = "/usr/local/bin";

pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The schema 3 drop-in (containerd 2.x deep-merges imported plugin tables).
pub const CONTAINERD_DROP_IN: &str = "/etc/containerd/conf.d/nixlet.toml";
pub const NODE_CONFIG: &str = nixlet_config::DEFAULT_CONFIG_PATH;
pub const DEFAULT_ENVIRONMENTS_DIR: &str = "/var/lib/nixlet/environments";
pub const STATE_FILE: &str = "/var/lib/nixlet/install-state.json";

/// Appended to a file's name for the copy of what install replaced or edited.
pub const BACKUP_SUFFIX: &str = ".nixlet-backup";
