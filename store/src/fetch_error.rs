//! Errors of the binary-cache fetch. Every failure of one path names the path, the substituter
//! and the cause, so an operator reading a `CreateContainer` error knows what to fix.

use std::io;
use std::path::PathBuf;

use nixlet_manifest::StorePath;

use crate::cache_info::CacheInfoError;
use crate::content_address::ContentAddressError;
use crate::flake_build::FlakeBuildProblem;
use crate::narinfo::{Compression, NarInfoError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid substituter {url:?}: {problem}")]
    InvalidSubstituter { url: String, problem: String },

    #[error("cannot build the http client: {0}")]
    HttpClient(String),

    #[error("cannot fetch {path} from {substituter}: {cause}")]
    Path {
        path: StorePath,
        substituter: String,
        cause: Box<FetchCause>,
    },

    #[error("store path {path} is not in any substituter (asked {substituters})")]
    NotFound {
        path: StorePath,
        substituters: String,
    },

    #[error("cannot install {path}: {cause}")]
    Install { path: StorePath, cause: LocalError },

    #[error("cannot fetch {path}: its dependency {dependency} could not be fetched")]
    DependencyFailed {
        path: StorePath,
        dependency: StorePath,
    },

    #[error("the references of {path} form a cycle through {through}")]
    ReferenceCycle { path: StorePath, through: StorePath },

    #[error("local store: {0}")]
    Local(LocalError),

    #[error("cannot fetch {roots}: {native}; the nix cli fallback failed too: {failures}")]
    NixCliFallback {
        roots: String,
        native: Box<FetchError>,
        failures: String,
    },

    #[error(
        "environment {environment}: no cache delivered package {install_id:?}, and building it \
         from flake {installable} failed: {problem}"
    )]
    FlakeBuild {
        environment: String,
        install_id: String,
        /// `<locked-url>#<attr-path>`.
        installable: String,
        problem: Box<FlakeBuildProblem>,
        /// Why the caches could not deliver it: logged, not shown (the build is what failed last).
        substitution: Box<FetchError>,
    },
}

impl FetchError {
    /// The store path the error is about, if it is about one.
    pub fn store_path(&self) -> Option<&StorePath> {
        match self {
            FetchError::Path { path, .. }
            | FetchError::NotFound { path, .. }
            | FetchError::Install { path, .. }
            | FetchError::DependencyFailed { path, .. }
            | FetchError::ReferenceCycle { path, .. } => Some(path),
            FetchError::NixCliFallback { native, .. } => native.store_path(),
            FetchError::FlakeBuild { substitution, .. } => substitution.store_path(),
            FetchError::InvalidSubstituter { .. }
            | FetchError::HttpClient(_)
            | FetchError::Local(_) => None,
        }
    }
}

/// Why one path could not be fetched from one substituter.
#[derive(Debug, thiserror::Error)]
pub enum FetchCause {
    #[error("{url} answered http {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("request to {url} timed out: {message}")]
    Timeout { url: String, message: String },
    #[error("download of {url} failed: {message}")]
    Transfer { url: String, message: String },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        last: Box<FetchCause>,
    },

    /// A file of a `file://` cache that exists but cannot be read, or one that must exist
    /// (`nix-cache-info`, a NAR its narinfo names) and does not.
    #[error("cannot {action} {}: {source}", path.display())]
    CacheFile {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("nar url {url:?} is not a file inside the cache directory")]
    NarOutsideCache { url: String },

    #[error("cache at {url} is unusable: {source}")]
    CacheInfo { url: String, source: CacheInfoError },
    #[error("narinfo at {url}: {source}")]
    NarInfo { url: String, source: NarInfoError },

    #[error("narinfo has no signature, and signatures are required")]
    Unsigned,
    #[error(
        "narinfo has no trusted signature and no content address that could vouch for it \
         (signed by: {signed_by})"
    )]
    UnsignedNotContentAddressed { signed_by: String },
    #[error("narinfo is signed only by untrusted keys ({keys}); trusted keys: {trusted}")]
    UntrustedKeys { keys: String, trusted: String },
    #[error(
        "signature by trusted key {key} does not verify: the signed fields were changed after \
         signing, or another key of that name signed them"
    )]
    InvalidSignature { key: String },
    #[error("unsigned narinfo's content address {ca} does not give this store path")]
    ContentAddressNotForPath { ca: String },
    #[error("content address {ca} is forged: the downloaded contents hash to {actual}")]
    ForgedContentAddress { ca: String, actual: String },
    #[error(transparent)]
    ContentAddress(ContentAddressError),

    #[error("nar hash mismatch: narinfo says {expected}, the download hashes to {actual}")]
    NarHashMismatch { expected: String, actual: String },
    #[error("nar size mismatch: narinfo says {expected} bytes, the download has {actual}")]
    NarSizeMismatch { expected: u64, actual: String },
    #[error("cannot decompress {compression} nar from {url}: {message}")]
    Decompress {
        compression: Compression,
        url: String,
        message: String,
    },
    #[error("malformed nar from {url}: {source}")]
    MalformedNar {
        url: String,
        source: nix_archive::nar::Error,
    },
    #[error("writing the download failed: {0}")]
    Local(LocalError),
}

impl FetchCause {
    /// Whether trying again may help: the cache or the network hiccuped, not the content.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchCause::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            FetchCause::Connect { .. }
            | FetchCause::Timeout { .. }
            | FetchCause::Transfer { .. } => true,
            _ => false,
        }
    }
}

/// A failure of this node's filesystem or Nix database.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("nix database {}: {message}", path.display())]
    Database { path: PathBuf, message: String },
}

impl LocalError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> LocalError {
        LocalError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
