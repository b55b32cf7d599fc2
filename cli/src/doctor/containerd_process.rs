//! The running containerd that reads the config being checked, found through `<root>/proc`
//! (`/host/proc` in the DaemonSet's pod, which runs with `hostPID`): its `PATH` is where it
//! looks for shims, and the shims inherit it to find `containerd-shim-runc-v2` and the OCI
//! runtime. Its command line also names the socket it serves, where doctor asks its version.

use std::path::{Path, PathBuf};

use nixlet_installer::HostRoot;

/// systemd's default `PATH` for services, which a containerd unit without `Environment=PATH`
/// runs with.
pub const DEFAULT_SERVICE_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where containerd reads its config when started without `--config`.
pub const DEFAULT_CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdProcess {
    pub pid: u32,
    /// Its `PATH`; `None` when its environment has none (or could not be read).
    pub path: Option<String>,
    /// Its executable (host path): containerd also looks for a shim in its directory.
    pub exe: Option<PathBuf>,
    /// The gRPC socket set by `--address`/`-a` on its command line.
    pub address: Option<PathBuf>,
}

impl ContainerdProcess {
    pub fn exe_dir(&self) -> Option<PathBuf> {
        self.exe.as_ref()?.parent().map(Path::to_path_buf)
    }
}

/// The containerd process whose config file is `config` (a host path), if one runs.
pub fn find(host: &HostRoot, config: &Path) -> Option<ContainerdProcess> {
    let proc_dir = host.local(Path::new("/proc"));
    let mut pids: Vec<u32> = std::fs::read_dir(&proc_dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let dir = proc_dir.join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim_end() != "containerd" {
            return None;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        if config_of(&cmdline) != config {
            return None;
        }
        let path = std::fs::read(dir.join("environ"))
            .ok()
            .and_then(|environ| path_of(&environ));
        // The kernel appends " (deleted)" when the binary was replaced since it started.
        let exe = std::fs::read_link(dir.join("exe")).ok().map(|exe| {
            let text = exe.to_string_lossy();
            PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text))
        });
        Some(ContainerdProcess {
            pid,
            path,
            exe,
            address: flag_value(&cmdline, &["--address", "-address", "-a", "--a"])
                .map(PathBuf::from),
        })
    })
}

/// The `--config`/`-c` argument of a NUL-separated command line, or containerd's default.
fn config_of(cmdline: &[u8]) -> PathBuf {
    flag_value(cmdline, &["--config", "-config", "-c", "--c"])
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTAINERD_CONFIG))
}

/// The value of a flag in any of its spellings (`-f v`, `-f=v`), as Go's flag package reads them.
fn flag_value(cmdline: &[u8], spellings: &[&str]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        for flag in spellings {
            if arg == flag {
                if let Some(value) = iter.clone().next() {
                    return Some(value.clone());
                }
            }
            if let Some(value) = arg.strip_prefix(&format!("{flag}=")) {
                return Some(value.to_string());
            }
        }
    }
    None
}

/// `PATH` from a NUL-separated environment block.
fn path_of(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"PATH="))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comes_from_either_flag_spelling_or_the_default() {
        assert_eq!(
            config_of(b"/usr/bin/containerd\0"),
            Path::new(DEFAULT_CONTAINERD_CONFIG)
        );
        assert_eq!(
            config_of(b"containerd\0--config\0/tmp/c.toml\0--log-level\0debug\0"),
            Path::new("/tmp/c.toml")
        );
        assert_eq!(
            config_of(b"containerd\0-c\0/x.toml\0"),
            Path::new("/x.toml")
        );
        assert_eq!(
            config_of(b"containerd\0--config=/y.toml\0"),
            Path::new("/y.toml")
        );
        assert_eq!(
            flag_value(
                b"containerd\0-c\0/x.toml\0--address\0/run/k3s/containerd.sock\0",
                &["--address", "-a"]
            )
            .as_deref(),
            Some("/run/k3s/containerd.sock")
        );
    }

    #[test]
    fn path_is_read_from_the_environment_block() {
        assert_eq!(
            path_of(b"HOME=/root\0PATH=/usr/bin:/bin\0LANG=C\0").as_deref(),
            Some("/usr/bin:/bin")
        );
        assert_eq!(path_of(b"HOME=/root\0"), None);
    }

    #[test]
    fn the_process_for_the_checked_config_is_found_below_the_root() {
        let root = tempfile::tempdir().unwrap();
        let write = |pid: u32, comm: &str, cmdline: &[u8], environ: &[u8]| {
            let dir = root.path().join(format!("proc/{pid}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
            std::fs::write(dir.join("environ"), environ).unwrap();
        };
        write(10, "bash", b"bash\0", b"PATH=/nope\0");
        write(
            20,
            "containerd",
            b"containerd\0--config\0/tmp/other.toml\0",
            b"PATH=/other\0",
        );
        write(
            30,
            "containerd",
            b"/usr/bin/containerd\0",
            b"PATH=/usr/local/bin:/usr/bin\0",
        );
        std::os::unix::fs::symlink(
            "/usr/bin/containerd (deleted)",
            root.path().join("proc/30/exe"),
        )
        .unwrap();
        let host = HostRoot::new(root.path());
        let found = find(&host, Path::new(DEFAULT_CONTAINERD_CONFIG)).unwrap();
        assert_eq!(
            found,
            ContainerdProcess {
                pid: 30,
                path: Some("/usr/local/bin:/usr/bin".into()),
                exe: Some("/usr/bin/containerd".into()),
                address: None,
            }
        );
        assert_eq!(find(&host, Path::new("/tmp/other.toml")).unwrap().pid, 20);
        assert_eq!(find(&host, Path::new("/etc/other.toml")), None);
    }
}
