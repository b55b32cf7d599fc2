//! The store of this node: the Nix database for validity and references, the disk for presence.

use std::path::PathBuf;

use nixlet_manifest::StorePath;

use crate::{NixDb, StoreError};

pub const DEFAULT_NIX_DB: &str = "/nix/var/nix/db/db.sqlite";

pub struct LocalStore {
    db_path: PathBuf,
}

impl LocalStore {
    pub fn new(db_path: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            db_path: db_path.into(),
        }
    }

    /// The closure of `roots`, sorted, every member registered and present on disk.
    ///
    /// The database is opened per call: a shim lives for days and host Nix may replace the file.
    pub fn closure(&self, roots: &[StorePath]) -> Result<Vec<StorePath>, StoreError> {
        let db = NixDb::open(&self.db_path)?;
        let closure = db.closure(roots)?;
        for path in &closure {
            // symlink_metadata: a store path may itself be a symlink, and a dangling one is still
            // a present path.
            if std::fs::symlink_metadata(path.to_path_buf()).is_err() {
                return Err(StoreError::MissingOnDisk { path: path.clone() });
            }
        }
        tracing::debug!(roots = roots.len(), paths = closure.len(), db = %db.path().display(), "computed closure");
        Ok(closure.into_iter().collect())
    }
}
