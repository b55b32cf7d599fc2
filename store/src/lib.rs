//! The node's Nix store as nixlet sees it.
//!
//! A store path counts as present only when the Nix database registers it as valid *and* it
//! exists on disk: a directory at the final name that nobody registered may be half-written.

mod error;
mod local_store;
mod nix_db;

pub use error::StoreError;
pub use local_store::{LocalStore, DEFAULT_NIX_DB};
pub use nix_db::NixDb;
