//! Closures of exactly N tiny paths (a root with `bin/busybox` referring to N-1 paths), for
//! warm starts where the cost is the number of bind mounts. Built once and kept as GC roots
//! under `<target>/nixlet-bench/gcroots/`, so they stay on the node between runs.

use anyhow::{ensure, Result};

use crate::nix_cli;
use crate::workdir::Workdir;

const GENERATION: &str = "v1";

#[derive(Debug, Clone)]
pub struct MountClosure {
    /// The store path an environment installs; `bin/busybox` is on the container's PATH.
    pub root: String,
    pub count: usize,
    /// The whole closure, root included.
    pub paths: Vec<String>,
}

impl MountClosure {
    pub fn obtain(work: &Workdir, count: usize) -> Result<Self> {
        ensure!(count >= 1, "a closure has at least its root");
        let tag = format!("m{GENERATION}-{count}");
        let link = work.subdir("gcroots")?.join(&tag);
        let root = work.build("mounts", &tag, count, 0, Some(&link))?;
        let paths = nix_cli::closure(&root)?;
        ensure!(
            paths.len() == count,
            "{root} has {} paths in its closure, expected {count}",
            paths.len()
        );
        Ok(Self { root, count, paths })
    }
}
