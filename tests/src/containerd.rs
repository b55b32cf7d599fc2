//! A private containerd 1.6 as a child process of the test: its own root, state and sockets under
//! the node's scratch directory, the nixlet shim first on its PATH (containerd 1.6 ignores
//! `runtime_path` and finds `containerd-shim-<name>-v2` on PATH), and `NIXLET_CONFIG` pointing at
//! the test's node config (containerd passes its environment on to shims).

use std::env;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::containerd_config::{self, ContainerdPaths};
use crate::wait;

/// How a test node's containerd is started (kept so that a restart uses exactly the same).
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub paths: ContainerdPaths,
    /// Directory holding `containerd-shim-nixlet-v2`, put first on containerd's PATH.
    pub shim_dir: PathBuf,
    /// Node config handed to the nixlet shim through `NIXLET_CONFIG`.
    pub nixlet_config: PathBuf,
    /// An argv prefix containerd is started through (empty: none); it must exec containerd
    /// in the end, so that containerd keeps the pid it was spawned with.
    pub wrapper: Vec<String>,
}

pub struct Containerd {
    spec: LaunchSpec,
    child: Option<Child>,
}

impl Containerd {
    /// Writes the config and starts containerd; returns once its socket exists (the CRI plugin
    /// may still be loading: callers wait for a CRI answer too).
    pub fn start(spec: LaunchSpec, sandbox_image: &str) -> Result<Self> {
        let paths = &spec.paths;
        create_dirs(paths)?;
        let snapshotter = snapshotter(&paths.dir);
        fs::write(
            &paths.config,
            containerd_config::render(
                paths,
                sandbox_image,
                &snapshotter,
                &spec.shim_dir.join("containerd-shim-nixlet-v2"),
            ),
        )?;
        let mut containerd = Self { spec, child: None };
        containerd.spawn()?;
        Ok(containerd)
    }

    /// Starts containerd with the config file a test wrote itself at `spec.paths.config` (e.g.
    /// one `nixlet node install` edited), which must use `spec.paths` for root, state and
    /// sockets; see [`containerd_config::render_without_nixlet`].
    pub fn start_configured(spec: LaunchSpec) -> Result<Self> {
        create_dirs(&spec.paths)?;
        if !spec.paths.config.is_file() {
            bail!("no containerd config at {}", spec.paths.config.display());
        }
        let mut containerd = Self { spec, child: None };
        containerd.spawn()?;
        Ok(containerd)
    }

    pub fn paths(&self) -> &ContainerdPaths {
        &self.spec.paths
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills containerd with SIGKILL (a crash, as far as the shims can tell) and starts it again
    /// with the same config and environment.
    pub fn restart(&mut self) -> Result<()> {
        self.kill(Signal::SIGKILL, Duration::ZERO);
        self.spawn()
    }

    /// Stops containerd: `signal`, then SIGKILL if it is still there after `grace`.
    pub fn kill(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        let exited = wait::poll(
            "containerd to exit",
            grace,
            Duration::from_millis(50),
            || Ok(child.try_wait()?.map(|_| ())),
        );
        if exited.is_err() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Fails with the log tail if containerd has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("containerd is not started");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "containerd exited ({status}); log tail:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of containerd's stdout/stderr, which also carries the shims' logs.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.spec.paths.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// containerd's whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.spec.paths.log).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        let paths = &self.spec.paths;
        // A killed containerd leaves its socket behind; remove it so that the wait below sees
        // the new one.
        let _ = fs::remove_file(&paths.address);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)?;
        let mut command = match self.spec.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg("containerd");
                command
            }
            None => Command::new("containerd"),
        };
        let child = command
            .arg("--config")
            .arg(&paths.config)
            .env("PATH", shim_path(&self.spec.shim_dir)?)
            .env("NIXLET_CONFIG", &self.spec.nixlet_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning containerd")?;
        self.child = Some(child);
        let address = paths.address.clone();
        wait::poll(
            "containerd's socket",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                self.check_running()?;
                Ok(address.exists().then_some(()))
            },
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill(Signal::SIGTERM, Duration::from_secs(5));
    }
}

/// A [`LaunchSpec::wrapper`] that starts containerd in a mount namespace of its own (private
/// propagation: nothing it mounts reaches the host), after `setup` (shell commands, e.g.
/// mounts) has run there; containerd and its shims keep the namespace.
pub fn mount_namespace_wrapper(setup: &str) -> Vec<String> {
    let script = format!("set -e\n{setup}\nexec \"$@\"\n");
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
        "sh",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

fn create_dirs(paths: &ContainerdPaths) -> Result<()> {
    for dir in [
        &paths.root,
        &paths.state,
        &paths.cni_bin,
        &paths.cni_conf,
        &paths.opt,
    ] {
        fs::create_dir_all(dir)?;
    }
    Ok(())
}

/// `<shim_dir>:<the usual PATH>`.
fn shim_path(shim_dir: &Path) -> Result<std::ffi::OsString> {
    let usual = env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let dirs = std::iter::once(shim_dir.to_path_buf()).chain(env::split_paths(&usual));
    Ok(env::join_paths(dirs)?)
}

/// `overlayfs` when an overlay mount works in `dir` (it does not on every filesystem, e.g. on an
/// overlay root), else `native`. `NIXLET_E2E_SNAPSHOTTER` overrides the choice.
pub fn snapshotter(dir: &Path) -> String {
    if let Ok(chosen) = env::var("NIXLET_E2E_SNAPSHOTTER") {
        return chosen;
    }
    if overlay_works(&dir.join("overlay-probe")).unwrap_or(false) {
        "overlayfs".to_owned()
    } else {
        "native".to_owned()
    }
}

fn overlay_works(probe: &Path) -> Result<bool> {
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
    for dir in [&lower, &upper, &work, &merged] {
        fs::create_dir_all(dir)?;
    }
    File::create(lower.join("file"))?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let mounted = mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .is_ok();
    let works = mounted && merged.join("file").exists();
    if mounted {
        umount2(&merged, MntFlags::MNT_DETACH)?;
    }
    fs::remove_dir_all(probe)?;
    Ok(works)
}
