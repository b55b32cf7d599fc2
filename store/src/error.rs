use std::path::PathBuf;

use nixlet_manifest::StorePath;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store path {path} is not on this node (not registered in the Nix database)")]
    NotValid { path: StorePath },

    #[error("store path {path} is registered in the Nix database but missing on disk")]
    MissingOnDisk { path: StorePath },

    #[error("no Nix database at {}: this node cannot tell which store paths are valid", path.display())]
    NoDatabase { path: PathBuf },

    #[error("Nix database {}: {source}", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("Nix database {} lists a malformed store path {value:?}", db.display())]
    MalformedPath { db: PathBuf, value: String },

    #[error("Nix database {} lists a malformed NAR hash {value:?} for {path}", db.display())]
    MalformedNarHash {
        db: PathBuf,
        path: StorePath,
        value: String,
    },
}
