//! Shim socket addresses, derived the way containerd's shims derive theirs, so that nixlet finds
//! the runc shim of a pod without asking it.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Where shims put their sockets unless containerd names a `socket_dir` (2.3+).
pub const DEFAULT_SOCKET_ROOT: &str = "/run/containerd/s";

/// `unix://<root>/<sha256 of containerd-address/namespace/group>`, as containerd's
/// `CreateSocketAddress` computes it.
pub fn socket_address(
    root: &str,
    containerd_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let path = Path::new(containerd_address).join(namespace).join(group);
    let hash = Sha256::digest(path.as_os_str().as_encoded_bytes());
    format!(
        "unix://{}/{}",
        root.trim_end_matches('/'),
        hex::encode(hash)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_shim_library_for_the_default_root() {
        for (address, namespace, group) in [
            ("/run/containerd/containerd.sock", "k8s.io", "pod1"),
            ("/tmp/x/containerd.sock", "default", "nixlet-c1"),
        ] {
            assert_eq!(
                socket_address(DEFAULT_SOCKET_ROOT, address, namespace, group),
                containerd_shim::socket_address(address, namespace, group)
            );
        }
    }

    #[test]
    fn a_socket_dir_replaces_the_root_only() {
        let default = socket_address(DEFAULT_SOCKET_ROOT, "/c.sock", "k8s.io", "g");
        let custom = socket_address("/run/s/", "/c.sock", "k8s.io", "g");
        assert_eq!(
            custom.rsplit('/').next(),
            default.rsplit('/').next(),
            "same hash"
        );
        assert!(custom.starts_with("unix:///run/s/"));
    }
}
