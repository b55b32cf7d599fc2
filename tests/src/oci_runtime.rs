//! The OCI runtimes nixlet can hand containers to (`[runtime] binary_name`): where a test finds
//! each one, what it must put in the node config to use it on this host, and how it proves
//! afterwards that this runtime, and not runc, ran a container.
//!
//! The proof is the runtime's own state: the runc shim calls `<binary> --root <root> create …`,
//! so the container's state directory under that root is written in the format of whichever
//! runtime really ran (runc and youki write `state.json` with different fields, crun writes
//! `status`), and only that runtime's `state` command reads it back.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::containerd_version;
use crate::leftovers::DEFAULT_RUNC_ROOT;
use crate::prereq::find_in_path;

/// Where cgroup v2 sits on a hybrid host; its `cgroup.controllers` says whether it owns any
/// controller.
const UNIFIED_CONTROLLERS: &str = "/sys/fs/cgroup/unified/cgroup.controllers";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciRuntime {
    Runc,
    Crun,
    Youki,
}

impl OciRuntime {
    pub fn name(self) -> &'static str {
        match self {
            OciRuntime::Runc => "runc",
            OciRuntime::Crun => "crun",
            OciRuntime::Youki => "youki",
        }
    }

    /// The runtime's binary: on PATH, or for youki also where `cargo install` puts it
    /// (`$CARGO_HOME/bin`, `~/.cargo/bin`), which is how scripts/install-deps.sh installs it.
    pub fn binary(self) -> Option<PathBuf> {
        find_in_path(self.name()).or_else(|| {
            (self == OciRuntime::Youki)
                .then(cargo_bin_dirs)
                .into_iter()
                .flatten()
                .map(|dir| dir.join(self.name()))
                .find(|candidate| candidate.is_file())
        })
    }

    /// Why this host cannot run the test with this runtime (empty when it can).
    pub fn missing(self) -> Vec<String> {
        match self.binary() {
            Some(_) => Vec::new(),
            None => vec![format!(
                "`{}` not found on PATH{} (run scripts/install-deps.sh)",
                self.name(),
                if self == OciRuntime::Youki {
                    " or in ~/.cargo/bin"
                } else {
                    ""
                }
            )],
        }
    }

    /// What to set as `[runtime] binary_name` so that this runtime runs containers on this
    /// host, preparing a wrapper in `dir` when one is needed (crun on a hybrid cgroup host).
    pub fn binary_name(self, dir: &Path) -> Result<String> {
        let binary = self
            .binary()
            .with_context(|| format!("{} is not installed", self.name()))?;
        if self == OciRuntime::Crun && cgroup2_owns_controllers() {
            return Ok(write_crun_wrapper(dir, &binary)?.display().to_string());
        }
        Ok(binary.display().to_string())
    }

    /// Whether this runtime refuses every bundle the containerd on PATH writes. Seen here:
    /// crun 1.8.1 (Debian 12) runs containerd 1.6's runtime-spec 1.0.2 and refuses 1.7.24's
    /// 1.2.0 and 2.1's 1.2.1 with "unknown version specified"; newer crun is assumed to read 1.2.
    pub fn refuses_containerds_spec(self) -> Result<bool> {
        if self != OciRuntime::Crun || containerd_version::oci_spec_version()? < (1, 2) {
            return Ok(false);
        }
        let binary = self.binary().context("crun is not installed")?;
        let output = Command::new(&binary).arg("--version").output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("crun version "))
            .with_context(|| format!("unexpected `crun --version` output {text:?}"))?;
        let mut numbers = version.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
        Ok((numbers.next(), numbers.next()) < (Some(1), Some(9)))
    }

    /// Checks that `container_id` is running under this runtime: its state directory under the
    /// runc shim's root has this runtime's format, and this runtime's `state` command reports it
    /// running.
    pub fn assert_runs(self, container_id: &str) -> Result<()> {
        let dir = Path::new(DEFAULT_RUNC_ROOT).join(container_id);
        ensure!(
            dir.is_dir(),
            "no runtime state at {} for container {container_id}",
            dir.display()
        );
        self.check_state_format(&dir)?;
        let state = self.state(container_id)?;
        ensure!(
            state["id"] == container_id && state["status"] == "running",
            "`{} state {container_id}` does not report it running: {state}",
            self.name()
        );
        ensure!(
            state["pid"].as_i64().is_some_and(|pid| pid > 0),
            "`{} state {container_id}` has no pid: {state}",
            self.name()
        );
        Ok(())
    }

    /// Checks that no state of `container_id` is left under the runc shim's root.
    pub fn assert_gone(self, container_id: &str) -> Result<()> {
        let dir = Path::new(DEFAULT_RUNC_ROOT).join(container_id);
        ensure!(
            !dir.exists(),
            "{} left its state {} after the pod was removed",
            self.name(),
            dir.display()
        );
        Ok(())
    }

    fn check_state_format(self, dir: &Path) -> Result<()> {
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let path = dir.join(name);
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        match self {
            // runc's libcontainer state: the init process and the whole config.
            OciRuntime::Runc => {
                let state = read_json("state.json")?;
                ensure!(
                    state.get("init_process_pid").is_some() && state.get("config").is_some(),
                    "{} is not runc's state: {state}",
                    dir.display()
                );
            }
            // crun keeps a `status` file and no state.json.
            OciRuntime::Crun => {
                let status = read_json("status")?;
                ensure!(
                    status.get("pid").is_some() && !dir.join("state.json").exists(),
                    "{} is not crun's state: {status}",
                    dir.display()
                );
            }
            // youki's state.json is the OCI state plus youki's own fields.
            OciRuntime::Youki => {
                let state = read_json("state.json")?;
                ensure!(
                    state.get("useSystemd").is_some() && state.get("init_process_pid").is_none(),
                    "{} is not youki's state: {state}",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// `<runtime> --root <root> state <id>`, parsed.
    fn state(self, container_id: &str) -> Result<serde_json::Value> {
        let binary = self.binary().context("runtime binary vanished")?;
        let out = Command::new(&binary)
            .args(["--root", DEFAULT_RUNC_ROOT, "state", container_id])
            .output()
            .with_context(|| format!("running {}", binary.display()))?;
        if !out.status.success() {
            bail!(
                "`{} state {container_id}` failed ({}): {}",
                self.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing `{} state {container_id}`", self.name()))
    }
}

fn cargo_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs
}

/// Whether this is a hybrid cgroup host whose cgroup v2 mount owns a controller (here:
/// hugetlb), which crun 1.8 refuses outright.
pub fn cgroup2_owns_controllers() -> bool {
    fs::read_to_string(UNIFIED_CONTROLLERS).is_ok_and(|c| !c.trim().is_empty())
}

/// Writes `dir/crun-legacy-cgroups`, which runs crun in a mount namespace of its own without
/// the cgroup v2 mount. Why: crun 1.8 decides the cgroup mode from the mounts alone (a tmpfs at
/// /sys/fs/cgroup plus cgroup2 at /sys/fs/cgroup/unified is "hybrid") and refuses hybrid mode
/// when cgroup v2 owns any controller ("cgroups in hybrid mode not supported, drop all
/// controllers from cgroupv2"); on these VMs hugetlb sits on cgroup v2. Without that mount crun
/// sees a plain cgroup v1 host and manages the v1 controllers as runc does. The namespace is
/// private, so the host keeps its mount; the container gets namespaces of its own anyway, and
/// `exec`, `kill`, `delete` go through the same wrapper and see the same layout. containerd
/// cannot be told to do this (the runc shim takes only a binary name), and moving hugetlb to a
/// v1 hierarchy would change the host for everyone. Hosts with pure cgroup v1 or v2 use crun
/// itself.
fn write_crun_wrapper(dir: &Path, crun: &Path) -> Result<PathBuf> {
    let unshare = find_in_path("unshare").context("`unshare` (util-linux) not found on PATH")?;
    fs::create_dir_all(dir)?;
    let wrapper = dir.join("crun-legacy-cgroups");
    let script = format!(
        "#!/bin/sh\n\
         # crun in a private mount namespace without cgroup v2: see nixlet-e2e's oci_runtime.rs.\n\
         exec {unshare} --mount --propagation private /bin/sh -c \
         'umount /sys/fs/cgroup/unified; exec \"$0\" \"$@\"' {crun} \"$@\"\n",
        unshare = unshare.display(),
        crun = crun.display(),
    );
    fs::write(&wrapper, script).with_context(|| format!("writing {}", wrapper.display()))?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    Ok(wrapper)
}
