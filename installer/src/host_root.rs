//! The node's root file system as the installer sees it: `/` on the node itself, `/host` in the
//! DaemonSet's pod. Host paths (what containerd and the shim see) are always written absolute and
//! mapped below the root only at the moment of I/O.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the installer runs on the node itself rather than in a container.
    pub fn is_slash(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Where the host path `host_path` is found from here. `..` is resolved lexically first, so
    /// a path read from a config file (an `imports` entry) cannot reach outside the root.
    pub fn local(&self, host_path: &Path) -> PathBuf {
        let clean = clean_absolute(host_path);
        let relative = clean.strip_prefix("/").unwrap_or(&clean);
        if relative.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(relative)
        }
    }
}

/// Lexical cleaning like Go's `filepath.Clean` (what containerd applies to `imports`) for an
/// absolute path: `.` and empty components vanish, `..` pops one component and stops at `/`.
pub fn clean_absolute(path: &Path) -> PathBuf {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut clean = PathBuf::from("/");
    clean.extend(parts);
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_map_below_the_root() {
        let host = HostRoot::new("/host");
        assert_eq!(
            host.local(Path::new("/etc/containerd/config.toml")),
            Path::new("/host/etc/containerd/config.toml")
        );
        assert_eq!(host.local(Path::new("/")), Path::new("/host"));
    }

    #[test]
    fn parent_components_cannot_escape_the_root() {
        let host = HostRoot::new("/host");
        assert_eq!(
            host.local(Path::new("/etc/containerd/../../../../etc/shadow")),
            Path::new("/host/etc/shadow")
        );
        assert_eq!(clean_absolute(Path::new("/a/./b//c/..")), Path::new("/a/b"));
    }
}
