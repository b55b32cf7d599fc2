//! The programs a nixlet container needs, looked up the way their callers look them up:
//! containerd finds `containerd-shim-nixlet-v2` on its `PATH` (or next to its own executable);
//! nixlet's shim, which inherits that `PATH`, starts `containerd-shim-runc-v2`; the runc shim
//! runs the OCI runtime named by the node config.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nixlet_config::NodeConfig;
use nixlet_installer::names::SHIM_BINARY;
use nixlet_installer::HostRoot;

use super::report::Report;

/// The search path containerd and its shims run with.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub path: String,
    /// containerd's own directory, where it also looks for shims.
    pub exe_dir: Option<PathBuf>,
    /// Whose `PATH` this is, for messages.
    pub described: String,
}

/// Where `name` is found as Go's `exec.LookPath` finds it (a regular file with an execute
/// bit), as a host path. A name with a `/` is taken as it is.
pub fn look_path(host: &HostRoot, path: &str, name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let candidate = Path::new("/").join(name);
        return is_executable_file(&host.local(&candidate)).then_some(candidate);
    }
    path.split(':')
        // An empty entry is the working directory, which is `/` for a systemd service.
        .map(|dir| Path::new("/").join(dir).join(name))
        .find(|candidate| is_executable_file(&host.local(candidate)))
}

fn is_executable_file(local: &Path) -> bool {
    std::fs::metadata(local)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

pub fn check(report: &mut Report, host: &HostRoot, search: &SearchPath, config: &NodeConfig) {
    // containerd: PATH first, then the directory of its own binary.
    let shim = look_path(host, &search.path, SHIM_BINARY).or_else(|| {
        let dir = search.exe_dir.as_ref()?;
        let candidate = dir.join(SHIM_BINARY);
        is_executable_file(&host.local(&candidate)).then_some(candidate)
    });
    match shim {
        Some(found) => report.ok(
            "nixlet shim",
            format!("{} (found on {})", found.display(), search.described),
        ),
        None => report.fail(
            "nixlet shim",
            format!(
                "{SHIM_BINARY} is not on {} ({})",
                search.described, search.path
            ),
            "run `nixlet node install --host-root /` (it copies the shim into /usr/local/bin), \
             or install the binary into a directory of that PATH; containerd 1.6 ignores \
             runtime_path",
        ),
    }

    let delegate = &config.runtime.delegate_shim;
    match look_path(host, &search.path, delegate) {
        Some(found) => report.ok(
            "runc shim",
            format!("{} (found on {})", found.display(), search.described),
        ),
        None => report.fail(
            "runc shim",
            format!(
                "{delegate} is not on {} ({}); nixlet forwards every container to it",
                search.described, search.path
            ),
            "install containerd's stock runc shim (Debian: `apt-get install containerd`, which \
             ships /usr/bin/containerd-shim-runc-v2), or set [runtime] delegate_shim in the node \
             config to its path",
        ),
    }

    let runtime = config.runtime.binary_name().unwrap_or("runc");
    match look_path(host, &search.path, runtime) {
        Some(found) => report.ok(
            "oci runtime",
            format!("{} (found on {})", found.display(), search.described),
        ),
        None => report.fail(
            "oci runtime",
            format!(
                "{runtime} ([runtime] binary_name{}) is not on {} ({})",
                if config.runtime.binary_name().is_none() {
                    ", default"
                } else {
                    ""
                },
                search.described,
                search.path
            ),
            format!(
                "install it (Debian: `apt-get install {}`; youki: see the README), or point \
                 [runtime] binary_name in the node config at an installed runtime",
                if runtime == "crun" { "crun" } else { "runc" }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn lookup_is_below_the_host_root_and_needs_an_execute_bit() {
        let root = tempfile::tempdir().unwrap();
        executable(&root.path().join("usr/local/bin/tool"));
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        std::fs::write(root.path().join("usr/bin/plain"), "data").unwrap();
        let host = HostRoot::new(root.path());
        let path = "/usr/local/bin:/usr/bin";
        assert_eq!(
            look_path(&host, path, "tool"),
            Some("/usr/local/bin/tool".into())
        );
        assert_eq!(look_path(&host, path, "plain"), None);
        assert_eq!(look_path(&host, "/usr/bin", "tool"), None);
        assert_eq!(
            look_path(&host, "", "/usr/local/bin/tool"),
            Some("/usr/local/bin/tool".into())
        );
    }
}
