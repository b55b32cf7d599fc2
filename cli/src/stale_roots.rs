//! Sweeping GC roots of containers that no longer exist.
//!
//! The shim removes a container's root at Delete; a node reboot or a killed shim skips that. A
//! root is stale when runc has no state for its container any more. A fresh root is left alone
//! for a grace period, because the shim adds it at Create before runc has created anything.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// runc's state root as the runc shim uses it (also for crun and youki through `BinaryName`).
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

pub const GRACE: Duration = Duration::from_secs(600);

/// Removes stale roots under `roots_dir` and returns them.
pub fn sweep_stale_roots(
    roots_dir: &Path,
    runc_root: &Path,
    grace: Duration,
    now: SystemTime,
) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(roots_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let age = entry
            .path()
            .symlink_metadata()?
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .unwrap_or_default();
        if age < grace || container_exists(runc_root, &name) {
            continue;
        }
        std::fs::remove_file(entry.path())?;
        removed.push(entry.path());
    }
    Ok(removed)
}

/// Roots are named `<namespace>.<id>` and both may contain dots: the container exists if any
/// split names a runc state directory.
fn container_exists(runc_root: &Path, root_name: &str) -> bool {
    root_name.match_indices('.').any(|(at, _)| {
        runc_root
            .join(&root_name[..at])
            .join(&root_name[at + 1..])
            .is_dir()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_old_roots_without_runc_state_go() {
        let dir = tempfile::tempdir().unwrap();
        let (roots, runc) = (dir.path().join("roots"), dir.path().join("runc"));
        std::fs::create_dir_all(&roots).unwrap();
        std::fs::create_dir_all(runc.join("k8s.io/alive")).unwrap();
        for name in ["k8s.io.alive", "k8s.io.gone", "default.gone"] {
            symlink("/nix/store/x-view", roots.join(name)).unwrap();
        }
        let later = SystemTime::now() + Duration::from_secs(3600);
        let fresh = sweep_stale_roots(&roots, &runc, GRACE, SystemTime::now()).unwrap();
        assert!(fresh.is_empty(), "fresh roots are kept: {fresh:?}");
        let mut removed = sweep_stale_roots(&roots, &runc, GRACE, later).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![roots.join("default.gone"), roots.join("k8s.io.gone")]
        );
        assert!(roots.join("k8s.io.alive").symlink_metadata().is_ok());
    }

    #[test]
    fn a_missing_roots_directory_is_nothing_to_sweep() {
        let removed = sweep_stale_roots(
            Path::new("/nonexistent/roots"),
            Path::new("/nonexistent/runc"),
            GRACE,
            SystemTime::now(),
        )
        .unwrap();
        assert!(removed.is_empty());
    }
}
