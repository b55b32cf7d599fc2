//! One GC root per container nixlet rewrote, from Create until Delete.
//!
//! The root is a symlink to the container's environment view, whose registered references are
//! the environment's outputs; host Nix's `nix-collect-garbage` and `nixlet gc` keep the whole
//! closure of every root, so nothing a running container mounts can be collected.

use std::io;
use std::path::{Path, PathBuf};

use nixlet_manifest::StorePath;

pub use nixlet_config::DEFAULT_GC_ROOTS_DIR;

/// The root's file name: containerd's namespace and container id, both `[A-Za-z0-9._-]`.
pub fn root_path(roots_dir: &Path, namespace: &str, container_id: &str) -> PathBuf {
    roots_dir.join(format!("{namespace}.{container_id}"))
}

/// Points the container's root at `view`, replacing an old root of the same container
/// atomically (a retried Create).
pub fn add_root(
    roots_dir: &Path,
    namespace: &str,
    container_id: &str,
    view: &StorePath,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(roots_dir)?;
    let root = root_path(roots_dir, namespace, container_id);
    let temporary = roots_dir.join(format!(".{namespace}.{container_id}.new"));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(view.to_path_buf(), &temporary)?;
    std::fs::rename(&temporary, &root)?;
    Ok(root)
}

/// Removes the container's root; a root that is already gone is fine.
pub fn remove_root(roots_dir: &Path, namespace: &str, container_id: &str) -> io::Result<()> {
    match std::fs::remove_file(root_path(roots_dir, namespace, container_id)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixlet-env-acme-web";

    #[test]
    fn a_root_appears_points_at_the_view_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let roots = dir.path().join("nixlet");
        let view = StorePath::parse(VIEW).unwrap();
        let root = add_root(&roots, "k8s.io", "abc", &view).unwrap();
        assert_eq!(root, roots.join("k8s.io.abc"));
        assert_eq!(std::fs::read_link(&root).unwrap(), Path::new(VIEW));
        // A retried Create replaces it.
        add_root(&roots, "k8s.io", "abc", &view).unwrap();
        assert_eq!(std::fs::read_dir(&roots).unwrap().count(), 1);
        remove_root(&roots, "k8s.io", "abc").unwrap();
        assert!(!root.exists());
        remove_root(&roots, "k8s.io", "abc").unwrap();
    }
}
