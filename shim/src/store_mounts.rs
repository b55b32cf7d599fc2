//! Which mounts give a container its closure: the environment's store tree bound on
//! `/nix/store` (one mount, whatever the closure's size), or one bind per store path when the
//! node config asks for that or no tree can be built here.
//!
//! Warm starts only `stat` the tree: the closure is read from the Nix database only to build a
//! tree or for per-path mounts. A tree, once built, holds its own links to every file, so it
//! stays complete even if a path of the closure is collected by host Nix meanwhile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nixlet_manifest::StorePath;
use nixlet_store::store_tree::{StoreTrees, TreeError};
use nixlet_store::{LocalStore, StoreError};

use crate::create_error::Phase;
use crate::spec_rewrite::StoreMounts;
use nixlet_config::{MountStrategy, NodeConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreMountError {
    #[error(transparent)]
    Closure(#[from] StoreError),
    #[error("store mounts: {0}")]
    Join(String),
}

impl StoreMountError {
    pub fn phase(&self) -> Phase {
        match self {
            StoreMountError::Closure(_) => Phase::Fetch,
            _ => Phase::Install,
        }
    }
}

/// Nix's state directory (`gc.lock`), next to the database: `/nix/var/nix/db/db.sqlite` →
/// `/nix/var/nix`.
pub fn nix_state_dir(nix_db: &Path) -> PathBuf {
    nix_db
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/nix/var/nix"))
        .to_path_buf()
}

/// The caller holds Nix's GC lock shared until the container's GC root protects the view and so
/// its tree.
pub async fn plan_store_mounts(
    config: &NodeConfig,
    roots: &[StorePath],
    view: &StorePath,
) -> Result<StoreMounts, StoreMountError> {
    let (config, roots, view) = (config.clone(), roots.to_vec(), view.clone());
    tokio::task::spawn_blocking(move || choose(&config, &roots, &view))
        .await
        .map_err(|join| StoreMountError::Join(join.to_string()))?
}

fn choose(
    config: &NodeConfig,
    roots: &[StorePath],
    view: &StorePath,
) -> Result<StoreMounts, StoreMountError> {
    let closure = || -> Result<Vec<StorePath>, StoreError> {
        let mut paths = LocalStore::new(&config.nix_db).closure(roots)?;
        paths.push(view.clone());
        Ok(paths)
    };
    if config.mounts.strategy == MountStrategy::PerPath {
        return Ok(StoreMounts::PerPath(closure()?));
    }
    let trees = StoreTrees::new(&config.mounts.trees_dir);
    if let Some(tree) = trees.existing(view) {
        return Ok(StoreMounts::Tree(tree));
    }
    let paths = closure()?;
    match trees.ensure(view, &paths) {
        Ok(outcome) => Ok(StoreMounts::Tree(outcome.path)),
        Err(error) => {
            log_fallback(&error, &config.mounts.trees_dir);
            Ok(StoreMounts::PerPath(paths))
        }
    }
}

/// A trees directory off the store's filesystem is a node's setup, not a passing failure:
/// said once per shim; anything else each time.
fn log_fallback(error: &TreeError, trees_dir: &Path) {
    static CROSS_DEVICE_LOGGED: AtomicBool = AtomicBool::new(false);
    if matches!(error, TreeError::CrossDevice { .. }) {
        if !CROSS_DEVICE_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(trees_dir = %trees_dir.display(), %error, "store trees unavailable; mounting each store path instead (set [mounts] trees_dir to a directory on the store's filesystem)");
        }
    } else {
        tracing::warn!(trees_dir = %trees_dir.display(), %error, "cannot build the store tree; mounting each store path instead");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_is_next_to_the_database() {
        assert_eq!(
            nix_state_dir(Path::new("/nix/var/nix/db/db.sqlite")),
            PathBuf::from("/nix/var/nix")
        );
    }
}
