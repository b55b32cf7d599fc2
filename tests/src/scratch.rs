//! A scratch directory per test node that holds containerd's root and state, sockets, images,
//! logs and GC-root links. Dropping it unmounts whatever is still mounted below it (rootfs
//! overlays, sandbox shm) and removes it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{mounts, procs};

/// Scratch directories are `/tmp/nixlet-e2e-*`. Not under `$TMPDIR` or the target dir: the
/// containerd socket lives there and a unix socket path must stay under 108 bytes.
pub const PARENT: &str = "/tmp";
pub const PREFIX: &str = "nixlet-e2e-";

/// File in a scratch dir naming the test process that owns it (see [`procs::identity`]).
const OWNER_FILE: &str = "owner";

pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory owned by this process.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(PARENT)
            .with_context(|| format!("creating a scratch directory under {PARENT}"))?
            .keep();
        let me = procs::identity(std::process::id() as i32).context("reading our own /proc")?;
        fs::write(dir.join(OWNER_FILE), me)?;
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

/// Scratch directories whose owning test process is gone (killed before its cleanup ran).
/// Directories without an owner file are left alone: they may be in the making.
pub fn abandoned() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(PARENT) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
        .map(|e| e.path())
        .filter(|dir| {
            fs::read_to_string(dir.join(OWNER_FILE))
                .is_ok_and(|owner| !procs::identity_alive(owner.trim()))
        })
        .collect()
}
