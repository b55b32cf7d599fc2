//! nixlet's environment model, pure apart from the local-directory source.
//!
//! A pod's annotation names an environment ([`select`] decides which one applies to a
//! container, [`EnvRef`] is its grammar); an [`EnvironmentSource`] such as [`DirSource`] holds
//! its generations; [`resolve`] turns one generation's `manifest.toml` ([`Manifest`]) into the
//! store paths and variables a container needs ([`ResolvedEnv`]).

pub mod annotations;
mod dir_source;
mod install_descriptor;
mod manifest;
mod reference;
mod resolve;
mod source;
mod store_path;
mod vars;

pub use annotations::{
    select, AnnotationError, Selection, CRI_CONTAINER_NAME, CRI_CONTAINER_TYPE,
    CRI_CONTAINER_TYPE_SANDBOX, CRI_SANDBOX_NAME, CRI_SANDBOX_NAMESPACE, ENVIRONMENT,
    ENVIRONMENT_PREFIX, FLOX_ENVIRONMENT, FLOX_ENVIRONMENT_PREFIX, FLOX_SKIP_CONTAINERS,
    SKIP_CONTAINERS,
};
pub use dir_source::DirSource;
pub use install_descriptor::{InstallDescriptor, DEFAULT_PRIORITY};
pub use manifest::{Manifest, ManifestError};
pub use reference::{EnvRef, ReferenceError, ReferenceProblem, Selector};
pub use resolve::{resolve, ResolveError, ResolvedEnv, ResolvedPackage};
pub use source::{EnvironmentSource, LoadedEnvironment, SourceError};
pub use store_path::{StorePath, StorePathError, StorePathProblem, STORE_DIR};
pub use vars::{expand_vars, VarsError};
