//! The node's Nix store as nixlet sees it.
//!
//! A store path counts as present only when the Nix database registers it as valid *and* it
//! exists on disk: a directory at the final name that nobody registered may be half-written.

mod error;
mod local_store;
mod nix_db;

pub mod cache_info;
pub mod content_address;
mod fetch_closure;
mod fetch_error;
mod fetch_path;
mod fetch_progress;
mod http_client;
pub mod install;
pub mod nar_download;
pub mod nar_unpack;
pub mod narinfo;
pub mod netrc;
pub mod nix32;
pub mod path_lock;
pub mod registration;
pub mod signature;
mod substituter;
pub mod trust;
pub mod view_install;
pub mod view_tree;

pub use error::StoreError;
pub use local_store::{LocalStore, DEFAULT_NIX_DB};
pub use nix_db::NixDb;

pub use fetch_closure::{FetchOptions, FetchSummary, Fetcher};
pub use fetch_error::{FetchCause, FetchError, LocalError};
pub use fetch_progress::{FetchProgress, ProgressSnapshot};
pub use install::sweep_stale_entries;
pub use path_lock::GcLock;
pub use substituter::SubstituterConfig;
