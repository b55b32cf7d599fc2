//! A real containerd daemon for tests that ask it something: the first `containerd` on PATH (put
//! a release's directory first to pick it), with root, state and ttrpc socket in a temporary
//! directory, its gRPC socket where the test says (below a test's host root), and neither CRI
//! nor NRI, so it starts in well under a second and touches nothing of the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use nixlet_installer::containerd_probe;
use nixlet_installer::ContainerdVersion;

pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    pub version: ContainerdVersion,
}

/// Whether this test can run a containerd; prints why not (a failure under `CI=true`).
pub fn available(test: &str) -> bool {
    let why = if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("containerd is not installed (scripts/install-deps.sh installs it)")
    } else if !nix::unistd::Uid::effective().is_root() {
        Some("running containerd needs root")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {why}; CI=true makes this a failure"
            );
            eprintln!("{test}: skipped: {why}");
            false
        }
    }
}

/// The release of the first `containerd` on PATH, from its `--version`.
pub fn path_version() -> ContainerdVersion {
    let binary = which("containerd").expect("containerd on PATH");
    Daemon::version_of(&binary)
}

/// The first executable `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

impl Daemon {
    /// The release of a containerd binary, from its `--version`.
    pub fn version_of(binary: &Path) -> ContainerdVersion {
        containerd_probe::binary_version(binary).unwrap()
    }

    /// Starts containerd serving gRPC on `socket`; returns once the socket exists.
    pub fn start(socket: &Path) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let _ = fs::remove_file(socket);
        // Schema 2: every release from 1.6 reads it (2.x migrates it, with a warning).
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{ttrpc}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = p("root"),
            state = p("state"),
            socket = socket.display(),
            ttrpc = p("ttrpc.sock"),
            opt = p("opt"),
        );
        fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut daemon = Daemon {
            child,
            dir,
            version: path_version(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not create {} within 30 s:\n{}",
                socket.display(),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
