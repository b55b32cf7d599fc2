//! Reading and replacing files on the host: atomically (a temporary file in the same directory,
//! fsync, rename, fsync of the directory), so containerd, a running shim or a crash never sees
//! half a file; and never through a symbolic link.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::InstallError;
use crate::names::BACKUP_SUFFIX;

/// The file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::io("inspect", path)(source)),
        Ok(metadata) if metadata.file_type().is_symlink() => Err(InstallError::Symlink {
            path: path.to_path_buf(),
        }),
        Ok(_) => fs::read(path)
            .map(Some)
            .map_err(InstallError::io("read", path)),
    }
}

pub fn read_text_optional(path: &Path) -> Result<Option<String>, InstallError> {
    read_optional(path)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| InstallError::Io {
                action: "read",
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
            })
        })
        .transpose()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Permission bits of an existing file.
pub fn mode_of(path: &Path) -> Option<u32> {
    fs::symlink_metadata(path)
        .ok()
        .map(|metadata| metadata.permissions().mode() & 0o7777)
}

/// `config.toml` → `config.toml.nixlet-backup`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` and permission bits `mode` in one rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.nixlet-{}.tmp", std::process::id()));
    // A temporary left by a killed run of the same pid would make create_new fail.
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have cleared bits that `mode` asks for.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(InstallError::io("write", path))
}

/// Removes a file and makes the removal durable.
pub fn remove(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(InstallError::io("remove", path))?,
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(InstallError::io("sync", dir))?;
    }
    Ok(())
}

/// Puts a backup back in place of `path`: the original bytes and permissions, in one rename.
pub fn restore(backup: &Path, path: &Path) -> Result<(), InstallError> {
    fs::rename(backup, path).map_err(InstallError::io("restore", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(InstallError::io("sync", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o755).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), Some(0o755));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("config.toml");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        let error = read_optional(&link).unwrap_err().to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
    }

    #[test]
    fn backup_name_appends_the_suffix() {
        assert_eq!(
            backup_path(Path::new("/etc/containerd/config.toml")),
            Path::new("/etc/containerd/config.toml.nixlet-backup")
        );
    }
}
