//! The node's Nix store as nixlet sees it.
//!
//! A store path counts as present only when the Nix database registers it as valid *and* it
//! exists on disk: a directory at the final name that nobody registered may be half-written.

mod db_queries;
mod error;
mod local_store;
mod nix_db;

pub mod cache_info;
pub mod content_address;
mod fetch_closure;
mod fetch_error;
mod fetch_path;
mod fetch_progress;
mod file_cache;
mod http_cache;
mod http_client;
pub mod install;
pub mod nar_download;
mod nar_source;
pub mod nar_unpack;
pub mod narinfo;
pub mod nix32;
pub mod path_lock;
pub mod registration;
pub mod signature;
mod speed_floor;
mod substituter;
pub mod trust;
// The environment view: the merged tree of an environment's outputs, installed as a store path.
pub mod view;

// One bind mount per container: the closure as a hard-link farm, and its GC.
pub mod store_tree;
pub mod tree_sweep;

// The bill of materials of an environment's closure.
pub mod drv_name;
pub mod environment_sbom;
pub mod path_info;
pub mod sbom;

// `nixlet doctor`'s look at a substituter.
pub mod cache_probe;

pub mod flake_build;
pub mod gc_exclusive_lock;
pub mod gc_plan;
pub mod gc_roots;
mod gc_sweep;
pub mod install_record;
mod invalidation;
pub mod nix_cli_backend;
mod process_tree;
pub mod store_graph;

pub use error::StoreError;
pub use local_store::{LocalStore, DEFAULT_NIX_DB};
pub use nix_db::NixDb;

pub use fetch_closure::{already_complete, FetchOptions, FetchSummary, Fetcher, SubstituterTally};
pub use fetch_error::{FetchCause, FetchError, LocalError};
pub use fetch_progress::{FetchProgress, ProgressSnapshot};
pub use flake_build::FlakeRecipe;
pub use gc_sweep::{collect_garbage, GcError, GcOptions, GcReport, Skipped, GC_BATCH};
pub use install::sweep_stale_entries;
pub use install_record::{InstallRecord, INSTALL_RECORD_FILE};
pub use invalidation::Invalidated;
pub use path_lock::GcLock;
pub use substituter::{SubstituterBackend, SubstituterConfig};
