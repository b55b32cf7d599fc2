//! The bill of materials of a resolved environment as this node's store has it: the closure of
//! the environment's outputs from the Nix database, each path classified by what is on disk.
//! The shim puts the result into the view and `nixlet env sbom` prints it: both call this, so
//! they print the same bytes.

use std::path::Path;

use nixlet_manifest::ResolvedEnv;

use crate::path_info::{closure_infos, PathInfo};
use crate::sbom::{closure_sbom, SbomError, SbomPath, SbomSubject};
use crate::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EnvironmentSbomError {
    #[error("sbom of {environment}: {source}")]
    Store {
        environment: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Sbom(#[from] SbomError),
}

pub fn environment_sbom(env: &ResolvedEnv, nix_db: &Path) -> Result<Vec<u8>, EnvironmentSbomError> {
    let subject = SbomSubject {
        owner: env.reference.owner.clone(),
        name: env.reference.name.clone(),
        generation: env.generation,
        lock_sha256: env.lock_digest,
        roots: env.store_paths(),
    };
    let infos =
        closure_infos(nix_db, &subject.roots).map_err(|source| EnvironmentSbomError::Store {
            environment: env.display_name(),
            source,
        })?;
    let paths: Vec<SbomPath> = infos.into_iter().map(classify).collect();
    Ok(closure_sbom(&subject, &paths)?)
}

/// A path with programs is an application; anything else (libraries, data, sources) a library.
fn classify(info: PathInfo) -> SbomPath {
    use std::os::unix::fs::PermissionsExt;
    let root = info.path.to_path_buf();
    let application = root.join("bin").is_dir()
        || std::fs::metadata(&root)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
    SbomPath { info, application }
}
