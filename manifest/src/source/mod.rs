//! Where environments come from: a source turns a reference into the text of one generation's
//! manifest (and lock), or says it does not have that environment.

pub(crate) mod dir;
pub(crate) mod http;
pub(crate) mod http_auth;
pub(crate) mod netrc;
#[cfg(test)]
pub(crate) mod test_http_server;

use std::path::PathBuf;

use crate::reference::EnvRef;
use crate::source::http::HttpSourceError;

/// One generation of an environment as a source holds it, not yet parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedEnvironment {
    /// The reference as asked for, selector included.
    pub reference: EnvRef,
    /// The generation the selector chose.
    pub generation: u64,
    /// Where the generation lives, a directory or a URL, for messages; `manifest.toml` and
    /// `manifest.lock` are below it.
    pub location: String,
    pub manifest_toml: String,
    /// The exact bytes of `manifest.lock`, when the generation has one.
    pub manifest_lock: Option<Vec<u8>>,
}

impl LoadedEnvironment {
    pub fn manifest_location(&self) -> String {
        format!("{}/{}", self.location, crate::source::dir::MANIFEST_FILE)
    }

    pub fn lock_location(&self) -> String {
        format!("{}/{}", self.location, crate::source::dir::LOCK_FILE)
    }
}

/// A place environments are looked up in; the node configuration lists them in search order.
pub trait EnvironmentSource: Send + Sync {
    /// How this source is shown in messages, e.g. `dir /var/lib/nixlet/environments`.
    fn describe(&self) -> String;

    /// `Ok(None)` when this source does not have the environment at all, so that the next
    /// source is asked; an error when it has the environment but not the generation asked for,
    /// or cannot read it.
    fn load(&self, reference: &EnvRef) -> Result<Option<LoadedEnvironment>, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} is not valid utf-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path:?} is not a directory")]
    NotADirectory { path: PathBuf },
    /// The root is not repeated: errors name the source (`dir <root>`) already.
    #[error("{path:?} resolves to {resolved:?}, outside the source root")]
    OutsideRoot { path: PathBuf, resolved: PathBuf },
    #[error("{name:?} cannot be used as a single directory name")]
    UnsafeName { name: String },
    #[error("environment {environment:?} has no generation {generation}: {path:?} does not exist")]
    GenerationMissing {
        environment: String,
        generation: u64,
        path: PathBuf,
    },
    #[error("environment {environment:?} has no generations: {dir:?} has no numbered directory")]
    NoGenerations { environment: String, dir: PathBuf },
    /// `current` can be any file: only its start is quoted.
    #[error(
        "{path:?} must name a generation (a number from 1 up), found {}",
        crate::reference::quoted(.found)
    )]
    InvalidCurrent { path: PathBuf, found: String },
    #[error(
        "no generation of environment {environment:?} in {dir:?} has a manifest.lock whose \
         sha256 is {digest}"
    )]
    DigestNotFound {
        environment: String,
        digest: String,
        dir: PathBuf,
    },
    /// Boxed because HTTP errors carry URLs and would make every `SourceError` large.
    #[error(transparent)]
    Http(Box<HttpSourceError>),
}

impl From<HttpSourceError> for SourceError {
    fn from(error: HttpSourceError) -> Self {
        SourceError::Http(Box::new(error))
    }
}
