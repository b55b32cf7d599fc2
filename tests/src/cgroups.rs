//! Cgroups left by a test: every pod of a test node gets one cgroup parent of its own, so that
//! cleanup can remove exactly that subtree from every hierarchy (v1 controllers and the unified
//! one) once the containers are gone.

use std::fs;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Removes the directory `parent` (e.g. `/nixlet-e2e-123`) and everything below it from every
/// mounted cgroup hierarchy, deepest first. Returns the directories that could not be removed
/// (still holding processes).
pub fn remove_tree(parent: &str) -> Vec<PathBuf> {
    let relative = parent.trim_start_matches('/');
    let mut left = Vec::new();
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(relative);
        if dir.is_dir() {
            remove_dirs_deepest_first(&dir, &mut left);
        }
    }
    left
}

/// The directories under /sys/fs/cgroup that are cgroup hierarchies: on a pure v2 host that is
/// the root itself, on v1 and hybrid hosts its sub-directories.
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect()
}

/// A cgroup directory is removed with rmdir only (its files are virtual), children first.
fn remove_dirs_deepest_first(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dirs_deepest_first(&path, left);
            }
        }
    }
    if fs::remove_dir(dir).is_err() && dir.exists() {
        left.push(dir.to_path_buf());
    }
}
