//! Why an install or uninstall stopped. Each message names the file or command at fault.

use std::path::PathBuf;

use crate::containerd_error::ConfigError;
use crate::containerd_probe::ProbeError;
use crate::containerd_version::VersionError;
use crate::restart::RestartError;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ContainerdConfig(#[from] ConfigError),
    #[error(transparent)]
    NodeConfig(#[from] nixlet_config::ConfigError),
    #[error("install state {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{} is a symbolic link: nixlet replaces only regular files, and a link's target may \
         mean another file on the host than in this container; edit its target by hand",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "backup {} already exists but the install state does not record it: it may hold the \
         original of {}, so move it away and run again",
        backup.display(),
        path.display()
    )]
    BackupExists { path: PathBuf, backup: PathBuf },
    #[error("backup {} of {} is missing, so the original cannot be restored", backup.display(), path.display())]
    BackupMissing { path: PathBuf, backup: PathBuf },
    #[error(transparent)]
    Restart(#[from] RestartError),
    /// The cause is in the message, not a source: it is the whole story, told once.
    #[error(
        "{0}; start containerd, or name the socket with --containerd-address, or (on a node \
         whose containerd does not run) its release with --containerd-version"
    )]
    Probe(ProbeError),
    #[error(transparent)]
    Version(#[from] VersionError),
}

impl From<ProbeError> for InstallError {
    fn from(error: ProbeError) -> InstallError {
        InstallError::Probe(error)
    }
}

impl InstallError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.into();
        move |source| InstallError::Io {
            action,
            path,
            source,
        }
    }
}
