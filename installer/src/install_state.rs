//! `/var/lib/nixlet/install-state.json`: what install did to this node, which is exactly what
//! uninstall undoes. A later install adds to the record but never overwrites what an earlier one
//! found, because the first original is the one to come back to.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containerd_edit::ConfigEdit;
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::managed_file;
use crate::names::STATE_FILE;

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallState {
    pub format: u32,
    /// Files install wrote, in the order it first wrote them (host paths).
    pub files: Vec<FileRecord>,
    /// Directories install created, outermost first (host paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_dirs: Vec<PathBuf>,
    /// containerd's config changed but containerd has not been restarted yet: the next run
    /// restarts it even if it changes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    pub path: PathBuf,
    pub role: FileRole,
    pub original: Original,
    /// SHA-256 of what install last wrote: a file that still has it was not touched since, and
    /// uninstall can put the original back byte for byte.
    pub installed_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_edit: Option<ConfigEdit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    Binary,
    /// A containerd config file of the operator's, edited in place.
    ContainerdConfig,
    /// nixlet's own containerd drop-in.
    ContainerdDropIn,
    NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Original {
    /// There was no file.
    Absent,
    /// The file install found is kept at `path` (host path).
    Backup { path: PathBuf },
}

impl Default for InstallState {
    fn default() -> Self {
        InstallState {
            format: FORMAT,
            files: Vec::new(),
            created_dirs: Vec::new(),
            restart_pending: false,
        }
    }
}

impl InstallState {
    pub fn path() -> &'static Path {
        Path::new(STATE_FILE)
    }

    /// The recorded state, or `None` when nixlet was never installed here (or was uninstalled).
    pub fn load(host: &HostRoot) -> Result<Option<InstallState>, InstallError> {
        let local = host.local(Self::path());
        let Some(bytes) = managed_file::read_optional(&local)? else {
            return Ok(None);
        };
        let state: InstallState =
            serde_json::from_slice(&bytes).map_err(|source| InstallError::State {
                path: local.clone(),
                source,
            })?;
        if state.format != FORMAT {
            return Err(InstallError::State {
                path: local,
                source: serde::de::Error::custom(format!(
                    "format {} is not the format {FORMAT} this nixlet writes",
                    state.format
                )),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state; its directory must exist.
    pub fn save(&self, host: &HostRoot) -> Result<(), InstallError> {
        let local = host.local(Self::path());
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| InstallError::State {
            path: local.clone(),
            source,
        })?;
        json.push(b'\n');
        managed_file::write_atomic(&local, &json, 0o644)
    }

    pub fn remove(host: &HostRoot) -> Result<(), InstallError> {
        managed_file::remove(&host.local(Self::path()))
    }

    pub fn record(&self, path: &Path) -> Option<&FileRecord> {
        self.files.iter().find(|record| record.path == path)
    }

    pub fn record_mut(&mut self, path: &Path) -> Option<&mut FileRecord> {
        self.files.iter_mut().find(|record| record.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("var/lib/nixlet")).unwrap();
        assert_eq!(InstallState::load(&host).unwrap(), None);
        let state = InstallState {
            files: vec![FileRecord {
                path: "/etc/containerd/config.toml".into(),
                role: FileRole::ContainerdConfig,
                original: Original::Backup {
                    path: "/etc/containerd/config.toml.nixlet-backup".into(),
                },
                installed_sha256: "00".into(),
                config_edit: Some(ConfigEdit {
                    added_version: true,
                    ..ConfigEdit::default()
                }),
            }],
            created_dirs: vec!["/etc/nixlet".into()],
            ..InstallState::default()
        };
        state.save(&host).unwrap();
        assert_eq!(InstallState::load(&host).unwrap(), Some(state));
    }

    #[test]
    fn unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        std::fs::create_dir_all(dir.path().join("var/lib/nixlet")).unwrap();
        std::fs::write(
            dir.path().join("var/lib/nixlet/install-state.json"),
            r#"{"format": 9, "files": []}"#,
        )
        .unwrap();
        let error = InstallState::load(&host).unwrap_err().to_string();
        assert!(error.contains("format 9 is not the format 1"), "{error}");
    }
}
