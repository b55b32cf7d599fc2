//! State a shim keeps outside containerd's own directories, which a killed (or buggy) shim leaves
//! behind: its socket in `/run/containerd/s` and runc's state directory. Both are found from this
//! node's own ids and address only, never by scanning for names, so that another containerd on
//! the host is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where containerd 1.6 shims (Go and Rust alike) put their sockets.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The runc state root the stock runc shim uses when no `Root` option is given.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

/// The socket a shim for `group` derives from containerd's address and namespace:
/// `/run/containerd/s/<sha256 hex of "<address>/<namespace>/<group>">`.
pub fn shim_socket(address: &Path, namespace: &str, group: &str) -> PathBuf {
    let key = address.join(namespace).join(group);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    Path::new(SHIM_SOCKET_DIR).join(hex::encode(digest))
}

/// The task bundles below containerd's v2 runtime state for namespace `k8s.io`.
pub fn bundles(bundles_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(bundles_dir) else {
        return Vec::new();
    };
    entries.filter_map(|e| Some(e.ok()?.path())).collect()
}

/// Socket path → where it was learnt from, for messages.
pub type SocketOrigins = BTreeMap<PathBuf, String>;

/// The shim sockets named in bundles' `address` files (`unix:///run/containerd/s/<hex>`).
pub fn bundle_sockets(bundles: &[PathBuf]) -> SocketOrigins {
    bundles
        .iter()
        .filter_map(|b| {
            let address = fs::read_to_string(b.join("address")).ok()?;
            let socket = PathBuf::from(address.trim().trim_start_matches("unix://"));
            let id = b.file_name()?.to_string_lossy();
            Some((socket, format!("named in bundle {id}/address")))
        })
        .filter(|(socket, _)| socket.starts_with(SHIM_SOCKET_DIR))
        .collect()
}

/// Removes those `candidates` that still exist as sockets; returns them with their origin. Call
/// only once every shim of the node is dead: then nobody listens on them any more.
pub fn remove_stale_sockets(candidates: &SocketOrigins) -> Vec<(PathBuf, String)> {
    candidates
        .iter()
        .filter(|(p, _)| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .filter(|(p, _)| fs::remove_file(p).is_ok())
        .map(|(p, origin)| (p.clone(), origin.clone()))
        .collect()
}

/// Deletes runc state left for `ids` under `roots` (`runc delete --force`, which also removes the
/// container's cgroups); returns the `<root>/<id>` directories it found.
pub fn remove_runc_state(roots: &[PathBuf], ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in roots {
        for id in ids {
            let state = root.join(id);
            if !state.is_dir() {
                continue;
            }
            let _ = Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["delete", "--force", id])
                .output();
            if state.is_dir() {
                let _ = fs::remove_dir_all(&state);
            }
            found.push(state);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_matches_containerd() {
        // Checked against a socket the runc shim created for this address, namespace and id.
        let socket = shim_socket(
            Path::new("/tmp/nixlet-e2e-eek4nq/containerd/containerd.sock"),
            "k8s.io",
            "6b78af094c2de720af1da66d47da5eea520dcc18c3949e540da93c79ef55c956",
        );
        assert_eq!(
            socket,
            Path::new(
                "/run/containerd/s/683bd8217dec5ea83ca2d59a61f49b0a58c130d6e0578c17fda90579bb01d27b"
            )
        );
    }
}
