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
///
/// The rename alone gives that for a crash of any process: readers see the page cache, not the
/// disk. There is no fsync, on purpose: bundles live in containerd's state directory
/// (`/run/containerd`, a tmpfs), which a machine crash empties anyway, and two fsyncs were the
/// larger part of the shim's own Create time wherever that directory is on a disk.
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
    // Buffered: serde_json writes token by token, a system call each on a bare file.
    let mut buffered = std::io::BufWriter::new(temporary.as_file_mut());
    serde_json::to_writer(&mut buffered, spec).map_err(|error| write_error(error.into()))?;
    buffered.flush().map_err(write_error)?;
    drop(buffered);
    temporary
        .persist(&path)
        .map(drop)
        .map_err(|error| write_error(error.error))
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
