//! nixlet's containerd shim: a task service in front of the stock runc shim that rewrites the
//! spec of containers asking for a Nix environment.

pub mod activation;
pub mod bootstrap;
pub mod bundle;
pub mod cleanup;
pub mod create_error;
pub mod create_report;
pub mod delegate;
pub mod env_overlay;
pub mod gc_root;
pub mod info;
pub mod prepare;
pub mod runtime_options;
pub mod shim;
pub mod spec_rewrite;
pub mod start;
pub mod store_mounts;
pub mod task_service;
pub mod view_cache;
