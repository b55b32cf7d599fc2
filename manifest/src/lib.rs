//! nixlet's environment model, pure apart from the `dir` and `http` sources.
//!
//! A pod's annotation names an environment ([`select`] decides which one applies to a
//! container, [`EnvRef`] is its grammar); an [`EnvironmentSource`] such as [`DirSource`] or
//! [`HttpSource`] holds its generations; [`resolve`] turns one generation's `manifest.toml`
//! ([`Manifest`]) and `manifest.lock` ([`Lockfile`]) into the store paths, variables and
//! activation scripts a container needs ([`ResolvedEnv`]).

mod activate_mode;
pub mod annotations;
mod containerize;
mod flake_installable;
mod install_descriptor;
mod lock;
mod manifest;
mod manifest_json;
mod options;
mod outputs;
mod packages;
mod profile;
mod reference;
mod resolve;
mod schema_version;
mod source;
mod store_path;
mod toml_read;
mod toml_syntax;
mod vars;

pub use activate_mode::{ActivateMode, ACTIVATE_MODES};
pub use annotations::{
    activate_mode, select, skips_exec, AnnotationError, Selection, ACTIVATE_MODE,
    CRI_CONTAINER_NAME, CRI_CONTAINER_TYPE, CRI_CONTAINER_TYPE_SANDBOX, CRI_SANDBOX_NAME,
    CRI_SANDBOX_NAMESPACE, ENVIRONMENT, ENVIRONMENT_PREFIX, FLOX_ACTIVATE_MODE, FLOX_ENVIRONMENT,
    FLOX_ENVIRONMENT_PREFIX, FLOX_SKIP_CONTAINERS, FLOX_SKIP_CONTAINERS_EXEC, SKIP_CONTAINERS,
    SKIP_CONTAINERS_EXEC,
};
pub use containerize::ContainerizeConfig;
pub use flake_installable::FlakeInstallable;
pub use install_descriptor::{InstallDescriptor, PackageSource, SelectedOutputs, DEFAULT_PRIORITY};
pub use lock::entry::{EntryProblem, LockEntry, LockEntryKind, STORE_PATH_OUTPUT};
pub use lock::freshness::StaleLock;
pub use lock::{LockError, Lockfile};
pub use manifest::{Manifest, ManifestError};
pub use options::Options;
pub use outputs::ResolvedOutput;
pub use packages::PackagesError;
pub use profile::Profile;
pub use reference::{EnvRef, ReferenceError, ReferenceProblem, Selector};
pub use resolve::{resolve, resolve_loaded, ResolveError, ResolvedEnv, ResolvedPackage};
pub use schema_version::{SchemaVersion, KNOWN_SCHEMA_VERSIONS};
pub use source::dir::{DirSource, CURRENT_FILE, LOCK_FILE, MANIFEST_FILE};
pub use source::http::{validate_base_url, HttpSource, HttpSourceError, HttpSourceOptions};
pub use source::netrc::{Netrc, NetrcEntry, NetrcError};
pub use source::{EnvironmentSource, LoadedEnvironment, SourceError};
pub use store_path::{StorePath, StorePathError, StorePathProblem, STORE_DIR};
pub use toml_syntax::TomlSyntax;
pub use vars::{expand_vars, VarsError};
