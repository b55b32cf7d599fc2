//! `nixlet gc`'s part for store trees (`store_tree.rs`): remove every tree whose environment view
//! no GC root points to, and what interrupted builders left.
//!
//! Must run under Nix's GC lock held exclusively: shims hold it shared from the moment they find
//! or build a tree until the container's GC root points at its view, so a tree without a root
//! seen here is one that no container uses and none is about to mount. A tree is kept when any
//! root (not only nixlet's) points to its view: keeping too much costs directory inodes,
//! removing a tree under a running container would change its `/nix/store`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use nixlet_manifest::StorePath;

use crate::store_tree::{
    measure_tree_at, open_dir, remove_tree_at, TreeError, LOCK_SUFFIX, TEMP_SUFFIX,
};

/// One tree removed (or, in a dry run, to be removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptTree {
    pub path: PathBuf,
    /// Allocated bytes whose last link went with the tree (see `store_tree::Freed`).
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeSweep {
    pub removed: Vec<SweptTree>,
    /// Trees kept because a root points to their view.
    pub kept: usize,
    /// Half-built trees of interrupted builders removed.
    pub leftovers: usize,
    pub freed_bytes: u64,
}

/// Removes the trees in `trees_dir` whose view is not in `roots`, and builders' leftovers.
/// A missing directory has nothing to sweep.
pub fn sweep_trees(
    trees_dir: &Path,
    roots: &BTreeSet<StorePath>,
    dry_run: bool,
) -> Result<TreeSweep, TreeError> {
    let mut sweep = TreeSweep::default();
    if !trees_dir.is_dir() {
        return Ok(sweep);
    }
    let trees = open_dir(trees_dir)?;
    let live: BTreeSet<&str> = roots.iter().map(StorePath::hash_part).collect();
    let read_error = |e: io::Error| TreeError::Io {
        op: "read",
        path: trees_dir.to_path_buf(),
        source: e,
    };
    let mut names: Vec<String> = std::fs::read_dir(trees_dir)
        .map_err(read_error)?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    let mut locks = Vec::new();
    let io_error = |op, name: &str, e: io::Error| TreeError::Io {
        op,
        path: trees_dir.join(name),
        source: e,
    };
    for name in names {
        let hidden = name.strip_prefix('.');
        if let Some(hash) = hidden.and_then(|n| n.strip_suffix(TEMP_SUFFIX)) {
            // Builders hold the GC lock shared, so under the exclusive lock none is running.
            tracing::info!(tree = %trees_dir.join(&name).display(), hash, "removing the leftover of an interrupted tree build");
            if !dry_run {
                let freed = remove_tree_at(&trees, OsStr::new(&name))
                    .map_err(|e| io_error("remove", &name, e))?;
                sweep.freed_bytes += freed.map_or(0, |f| f.bytes);
            }
            sweep.leftovers += 1;
        } else if hidden.is_some_and(|n| n.ends_with(LOCK_SUFFIX)) {
            locks.push(name);
        } else if live.contains(name.as_str()) {
            sweep.kept += 1;
        } else if hidden.is_none() {
            let path = trees_dir.join(&name);
            let freed = if dry_run {
                measure_tree_at(&trees, OsStr::new(&name))
                    .map_err(|e| io_error("measure", &name, e))?
            } else {
                remove_tree_at(&trees, OsStr::new(&name))
                    .map_err(|e| io_error("remove", &name, e))?
                    .unwrap_or_default()
            };
            tracing::info!(tree = %path.display(), freed_bytes = freed.bytes, dry_run, "removed store tree: no root points to its view");
            sweep.freed_bytes += freed.bytes;
            sweep.removed.push(SweptTree {
                path,
                freed_bytes: freed.bytes,
            });
        }
    }
    // A builder's lock goes with its tree (no builder runs: we hold the GC lock exclusively).
    for name in locks {
        let hash = &name[1..name.len() - LOCK_SUFFIX.len()];
        if dry_run || live.contains(hash) || trees_dir.join(hash).exists() {
            continue;
        }
        if let Err(error) = std::fs::remove_file(trees_dir.join(&name)) {
            tracing::warn!(lock = %trees_dir.join(&name).display(), %error, "cannot remove a tree lock");
        }
    }
    Ok(sweep)
}
