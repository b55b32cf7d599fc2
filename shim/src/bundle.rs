//! The OCI bundle containerd prepared: reading and atomically replacing its `config.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

pub fn read_spec(bundle: &Path) -> Result<Value, BundleError> {
    let path = config_path(bundle);
    let bytes = std::fs::read(&path).map_err(|source| BundleError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path, source })
}

/// Replaces `config.json` so that a crash at any point leaves either the old or the new file,
/// never a truncated one that runc would misread.
pub fn write_spec(bundle: &Path, spec: &Value) -> Result<(), BundleError> {
    let path = config_path(bundle);
    let write_error = |source| BundleError::Write {
        path: path.clone(),
        source,
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".config.json.nixlet-")
        .tempfile_in(bundle)
        .map_err(write_error)?;
    serde_json::to_writer(&mut temporary, spec).map_err(|error| write_error(error.into()))?;
    temporary.flush().map_err(write_error)?;
    temporary.as_file().sync_all().map_err(write_error)?;
    temporary
        .persist(&path)
        .map_err(|error| write_error(error.error))?;
    std::fs::File::open(bundle)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temporary_file() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(config_path(bundle.path()), b"{\"old\":true}").unwrap();
        let spec = json!({"ociVersion": "1.0.2", "process": {"args": ["sh"]}});
        write_spec(bundle.path(), &spec).unwrap();
        assert_eq!(read_spec(bundle.path()).unwrap(), spec);
        let names: Vec<_> = std::fs::read_dir(bundle.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["config.json"]);
    }

    #[test]
    fn unreadable_or_malformed_config_names_the_file() {
        let bundle = tempfile::tempdir().unwrap();
        let error = read_spec(bundle.path()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("read {}/config.json:", bundle.path().display())));
        std::fs::write(config_path(bundle.path()), b"{").unwrap();
        let error = read_spec(bundle.path()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("parse {}/config.json:", bundle.path().display())));
    }
}
