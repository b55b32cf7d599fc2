//! A scratch directory per test node that holds containerd's root and state, sockets, images,
//! logs and GC-root links. Dropping it unmounts whatever is still mounted below it (rootfs
//! overlays, sandbox shm) and removes it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::mounts;

pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory under /tmp. Not under `$TMPDIR` or the target dir: the
    /// containerd socket lives here and a unix socket path must stay under 108 bytes.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nixlet-e2e-")
            .tempdir_in("/tmp")
            .context("creating a scratch directory under /tmp")?
            .keep();
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `path` joined to the scratch dir, created as a directory.
    pub fn subdir(&self, path: &str) -> Result<PathBuf> {
        let dir = self.dir.join(path);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for failure in mounts::unmount_all_under(&self.dir) {
            eprintln!("nixlet-e2e cleanup: could not unmount {failure}");
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!(
                "nixlet-e2e cleanup: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}
