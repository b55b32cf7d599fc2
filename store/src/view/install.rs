//! Installing an environment view as a content-addressed store path.
//!
//! The view's path is computed from its own NAR, as Nix computes a path added recursively with
//! references (`source:<refs>` type, design.md §5), and registered with `CA: fixed:r:sha256:…`,
//! so host Nix's `nix store verify` accepts it without a signature. The same tree always gives
//! the same path: a view already installed is reused, not rebuilt. The install follows the
//! fetcher's protocol: path lock, shared GC lock, temporary entry, atomic rename, registration.

use std::path::Path;
use std::sync::Arc;

use nix_derivation::{CAHash, NixHash};
use nixlet_manifest::{StorePath, STORE_DIR};
use sha2::{Digest, Sha256};

use crate::content_address::{store_path_for, ContentAddressError};
use crate::fetch_error::LocalError;
use crate::install::{StoreDir, TempEntry};
use crate::nar_unpack;
use crate::path_lock::{GcLock, PathLock};
use crate::registration::{NixDbWriter, Registration};
use crate::view::tree::ViewTree;

#[derive(Debug, thiserror::Error)]
pub enum ViewInstallError {
    #[error("encode view {name:?}: {source}")]
    Encode {
        name: String,
        #[source]
        source: nix_archive::nar::Error,
    },
    #[error("view {name:?}: {source}")]
    Address {
        name: String,
        #[source]
        source: ContentAddressError,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: StorePath,
        #[source]
        source: std::io::Error,
    },
    #[error("install view {path}: {source}")]
    Local {
        path: StorePath,
        #[source]
        source: LocalError,
    },
}

/// The store path `tree` gets under `name`, without installing anything.
pub fn view_path(tree: &ViewTree, name: &str) -> Result<(StorePath, Vec<u8>), ViewInstallError> {
    let nar = tree.to_nar().map_err(|source| ViewInstallError::Encode {
        name: name.to_string(),
        source,
    })?;
    let digest: [u8; 32] = Sha256::digest(&nar).into();
    let path = store_path_for(
        &CAHash::Nar(NixHash::Sha256(digest)),
        name,
        &tree.references,
        false,
    )
    .map_err(|source| ViewInstallError::Address {
        name: name.to_string(),
        source,
    })?;
    Ok((path, nar))
}

/// Installs `tree` as a store path called `name` (unless it already is) and returns the path.
pub async fn install_view(
    tree: &ViewTree,
    name: &str,
    nix_db: &Path,
    nix_state_dir: &Path,
) -> Result<StorePath, ViewInstallError> {
    let (path, nar) = view_path(tree, name)?;
    let lock_error = |source| ViewInstallError::Lock {
        path: path.clone(),
        source,
    };
    // Held until registration: nixlet's GC and host Nix's GC take it exclusively.
    let gc = GcLock::shared(nix_state_dir).await.map_err(lock_error)?;
    let lock = PathLock::acquire(Path::new(STORE_DIR), &path)
        .await
        .map_err(lock_error)?;

    let registration = Registration {
        path: path.clone(),
        nar_hash: Sha256::digest(&nar).into(),
        nar_size: nar.len() as u64,
        references: tree.references.clone(),
        deriver: None,
        signatures: Vec::new(),
        ca: Some(format!(
            "fixed:r:sha256:{}",
            crate::nix32::encode(&Sha256::digest(&nar))
        )),
    };
    let db_path = nix_db.to_path_buf();
    let installed = tokio::task::spawn_blocking(move || {
        let result = install_locked(&registration, &nar, &db_path, &lock);
        drop(lock);
        result
    })
    .await
    .unwrap_or_else(|join| {
        Err(LocalError::io(
            "install view",
            STORE_DIR,
            std::io::Error::other(join.to_string()),
        ))
    });
    drop(gc);
    match installed {
        Ok(fresh) => {
            tracing::debug!(path = %path, fresh, "environment view ready");
            Ok(path)
        }
        Err(source) => Err(ViewInstallError::Local { path, source }),
    }
}

/// Under the path lock: reuse a registered view, else unpack, rename into place, register.
/// Returns whether it installed anything.
fn install_locked(
    registration: &Registration,
    nar: &[u8],
    db_path: &Path,
    lock: &PathLock,
) -> Result<bool, LocalError> {
    let path = &registration.path;
    let store = Arc::new(StoreDir::open(STORE_DIR)?);
    let mut db = NixDbWriter::open(db_path)?;
    if db.is_registered(path)? && store.exists(std::ffi::OsStr::new(path.base_name()))? {
        return Ok(false);
    }
    let temp = TempEntry::claim(&store, path, lock)?;
    nar_unpack::unpack(&mut &nar[..], store.fd(), temp.name()).map_err(|error| {
        LocalError::io(
            "unpack",
            temp.full_path(),
            std::io::Error::other(error.to_string()),
        )
    })?;
    temp.install(path)?;
    if let Err(error) = db.register(registration) {
        // Nobody trusted the unregistered path yet: we still hold its lock.
        let _ = store.remove(std::ffi::OsStr::new(path.base_name()));
        return Err(error);
    }
    Ok(true)
}
