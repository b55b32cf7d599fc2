//! The node installer behind `nixlet node install` and `nixlet node uninstall`.
//!
//! Install asks the running containerd for its release, puts the shim and the CLI on the host's
//! `PATH`, adds the `nixlet` runtime to containerd's config in the schema that release reads
//! (schema 2 by an in-place edit, schema 3 and 4 by a drop-in), writes the node config with the
//! runc options of the node's runc handler, and restarts containerd only when its config changed. Everything it did is recorded in
//! `/var/lib/nixlet/install-state.json`, which is what uninstall undoes: files it created are
//! removed, files it replaced or edited get their original bytes back.
//!
//! The containerd config logic (which file to touch, the comment-preserving edit and its inverse)
//! is pure over file contents; the file system is touched only in `install`, `uninstall`,
//! `managed_file` and `install_state`, always below a host root so tests use a temporary
//! directory as the node.

pub mod containerd_edit;
mod containerd_error;
pub mod containerd_imports;
pub mod containerd_plan;
pub mod containerd_probe;
pub mod containerd_schema;
pub mod containerd_version;
mod error;
pub mod host_root;
pub mod install;
pub mod install_state;
pub mod managed_file;
pub mod names;
pub mod node_config_file;
pub mod report;
pub mod restart;
pub mod runc_handler;
pub mod runtime_form;
pub mod uninstall;

pub use containerd_error::ConfigError;
pub use containerd_probe::RunningContainerd;
pub use containerd_version::ContainerdVersion;
pub use error::InstallError;
pub use host_root::HostRoot;
pub use install::{install, InstallOptions};
pub use report::{Outcome, Report, RestartOutcome, Step};
pub use restart::{CommandRestarter, ContainerdRestarter, RestartError};
pub use runtime_form::RuntimeForm;
pub use uninstall::uninstall;
