//! `nixlet node install` end to end, as the DaemonSet runs it against the host mounted at
//! `--host-root`: a temporary host root holding a node's containerd config with only the runc
//! handler (schema 2 for containerd 1.x, schema 3 for 2.x, as the release under test reads it;
//! see `containerd_version`), and that containerd running from it. The real `nixlet` binary asks
//! the running containerd for its release on the socket its config names (found below the host
//! root, as from the pod), adds the runtime in that release's schema and copies the runc
//! handler's options into the node config. A private containerd then starts from the edited
//! config, finds the installed shim on its PATH (the host root's /usr/local/bin) and runs a
//! nixlet pod through CRI with handler `nixlet`, whose runc state lies under the runc root the
//! node config got from containerd's runc handler. `nixlet node uninstall` must then give the
//! host root back exactly as it was.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use nixlet_e2e::containerd::{mount_namespace_wrapper, Containerd, LaunchSpec};
use nixlet_e2e::containerd_config::{ContainerdPaths, NIXLET_HANDLER};
use nixlet_e2e::containerd_version;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::expect::has_runcs_features;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::{Prelaunch, TestNode};
use nixlet_e2e::node_config::manifest;
use nixlet_e2e::procs;
use nixlet_e2e::shim_build::{self, CLI_BINARY, SHIM_BINARY};

const ENVIRONMENT: &str = "nixlet.dev/environment";
const TAG: &str = "node-install";

/// Host paths, as `nixlet node install` writes them.
const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";
const CONTAINERD_DROP_IN: &str = "etc/containerd/conf.d/nixlet.toml";
const BINARY_DIR: &str = "usr/local/bin";
const NODE_CONFIG: &str = "etc/nixlet/config.toml";
/// How install declares the runtime for containerd 2.0 to 2.3.
const RUNC_FORM: &str = "runtime_type = \"io.containerd.runc.v2\"\n  \
     runtime_path = \"/usr/local/bin/containerd-shim-nixlet-v2\"\n";

/// What the test learns while installing and checks after uninstalling.
struct Installed {
    host_root: PathBuf,
    /// `nixlet` and the shim, staged as the DaemonSet's image carries them.
    release_dir: PathBuf,
    /// Every file below the host root before install, with its bytes.
    before: BTreeMap<PathBuf, Vec<u8>>,
    /// Touched by `--restart-command` instead of restarting a system containerd.
    restart_marker: PathBuf,
    /// The private containerd's paths: its runc handler's `Root` is what nixlet must get.
    paths: ContainerdPaths,
}

#[test]
fn installed_node_runs_a_nixlet_pod_and_uninstall_restores_it() {
    let installed = OnceCell::new();
    TestNode::run_test_with_containerd(
        "installed_node_runs_a_nixlet_pod_and_uninstall_restores_it",
        |pre| install(pre, &installed),
        |node| {
            let installed = installed.get().context("install did not run")?;
            run_pod(node, installed)?;
            uninstall(installed)
        },
    );
}

/// Builds the host root, starts containerd from it as the node runs it before nixlet, installs
/// into it twice (the second run must change nothing), stops that containerd and says how to
/// start it again as the host's systemd unit would after the restart.
fn install(pre: &Prelaunch<'_>, installed: &OnceCell<Installed>) -> Result<LaunchSpec> {
    let host_root = pre.scratch.join("host");
    let config = host_root.join(CONTAINERD_CONFIG);
    fs::create_dir_all(config.parent().expect("config has a parent"))?;
    fs::write(&config, &pre.config_without_nixlet)?;
    // The config names the private containerd's socket; from the host root it is found where a
    // pod finds the node's: below the root, at the same path.
    let socket_below_root = host_root.join(pre.paths.address.strip_prefix("/")?);
    fs::create_dir_all(socket_below_root.parent().context("socket has a parent")?)?;
    std::os::unix::fs::symlink(&pre.paths.address, &socket_below_root)?;
    let before = snapshot(&host_root)?;

    let release_dir = pre.scratch.join("release");
    fs::create_dir_all(&release_dir)?;
    for (name, built) in [
        (CLI_BINARY, shim_build::cli_binary()?),
        (SHIM_BINARY, shim_build::shim_binary()?),
    ] {
        fs::copy(&built, release_dir.join(name))
            .with_context(|| format!("staging {}", built.display()))?;
    }
    let restart_marker = pre.scratch.join("containerd-restart-requested");
    let installed = installed.get_or_init(|| Installed {
        host_root: host_root.clone(),
        release_dir,
        before,
        restart_marker,
        paths: pre.paths.clone(),
    });

    let version = containerd_version::installed()?;
    let mut paths = pre.paths.clone();
    paths.config = config.clone();
    let launch = LaunchSpec {
        paths,
        shim_dir: host_root.join(BINARY_DIR),
        nixlet_config: host_root.join(NODE_CONFIG),
        wrapper: if version.gets_the_runc_form() {
            host_bin_dir_wrapper(&host_root.join(BINARY_DIR))
        } else {
            Vec::new()
        },
    };
    // Before install the node has no nixlet, and no binary directory to bind-mount yet.
    let mut running = Containerd::start_configured(LaunchSpec {
        wrapper: Vec::new(),
        ..launch.clone()
    })?;

    let node_config = pre.nixlet_config.display().to_string();
    let first = installed.node(&["install", "--node-config", &node_config])?;
    eprintln!("first install on containerd {version}:\n{first}");
    ensure!(
        first.starts_with(&format!(
            "containerd {version} (answered at {}): ",
            pre.paths.address.display()
        )),
        "install did not ask the running containerd for its release: {first}"
    );
    ensure!(
        installed.restart_marker.exists(),
        "install changed containerd's config but did not restart containerd: {first}"
    );
    let edited = fs::read_to_string(&config)?;
    if version.uses_schema_3() {
        let drop_in = fs::read_to_string(host_root.join(CONTAINERD_DROP_IN))
            .context("install wrote no schema 3 drop-in")?;
        let form = if version.gets_the_runc_form() {
            RUNC_FORM
        } else {
            "runtime_type = \"io.containerd.nixlet.v2\"\n"
        };
        ensure!(
            edited.contains("imports = [\"conf.d/nixlet.toml\"]")
                && drop_in.starts_with("# Written by `nixlet node install`")
                && drop_in.contains("\nversion = 3\n")
                && drop_in.contains(
                    "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nixlet]"
                )
                && drop_in.contains(form),
            "install did not add the nixlet runtime for containerd {version} as {form:?}:\n\
             {edited}\n{drop_in}"
        );
    } else {
        ensure!(
            edited.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nixlet]")
                && edited.contains("io.containerd.nixlet.v2"),
            "install did not add the nixlet runtime to {}:\n{edited}",
            config.display()
        );
    }
    // The --node-config file, plus the runc handler's Root (the harness sets no runc option).
    let written = fs::read_to_string(host_root.join(NODE_CONFIG))?;
    let configmap = fs::read_to_string(pre.nixlet_config)?;
    let copied = format!(
        "[runtime.runc_options]\nRoot = \"{}\"\n",
        pre.paths.runc_root.display()
    );
    ensure!(
        written.starts_with(&configmap) && written.ends_with(&copied),
        "the installed node config is not --node-config plus {copied:?}:\n{written}"
    );
    for name in [CLI_BINARY, SHIM_BINARY] {
        let path = host_root.join(BINARY_DIR).join(name);
        let mode = fs::metadata(&path)
            .with_context(|| format!("install did not create {}", path.display()))?
            .permissions()
            .mode();
        ensure!(mode & 0o111 != 0, "{} is not executable", path.display());
    }

    fs::remove_file(&installed.restart_marker)?;
    let second = installed.node(&["install", "--node-config", &node_config])?;
    ensure!(
        second.contains("nothing changed"),
        "a second install changed something:\n{second}"
    );
    ensure!(
        !installed.restart_marker.exists(),
        "a second install restarted containerd though nothing changed"
    );

    // The "restart": this containerd stops, the harness starts it from the edited config.
    running.kill(
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_secs(10),
    );
    Ok(launch)
}

/// A nixlet pod on the installed node: the environment's program runs on the empty image, and
/// the shim serving it is the one install copied into the host root.
fn run_pod(node: &TestNode, installed: &Installed) -> Result<()> {
    let fixture = node.fixture(TAG)?;
    node.publish(
        "acme/hello",
        1,
        &manifest(&[("hello", &fixture.hello)], &[]),
    )?;
    let cri = node.cri();
    let pod = cri.run_pod(
        &node
            .pod("hello", NIXLET_HANDLER)
            .annotation(ENVIRONMENT, "acme/hello"),
    )?;
    let hello = ContainerSpec::new("hello", EMPTY_IMAGE).command(&["hello"]);
    let (code, out) = cri.run_to_exit(&pod, &hello)?;
    ensure!(code == 0, "hello exited with {code}; stdout: {out}");
    ensure!(out == expected_hello_output(TAG), "hello printed {out:?}");
    // The runc option install copied reached the runc shim: the sandbox runc runs for nixlet's
    // handler keeps its state under containerd's runc handler's Root, not runc's default.
    let sandbox_state = installed.paths.runc_root.join("k8s.io").join(&pod.id);
    ensure!(
        sandbox_state.join("state.json").is_file(),
        "no runc state at {}: the copied Root did not reach the runc shim",
        sandbox_state.display()
    );

    // Where containerd reports handlers' features to the kubelet (2.0 and later), the handler
    // install declared has runc's: on 2.0-2.3 only because install wrote the runc form there.
    has_runcs_features(cri, NIXLET_HANDLER)?;

    // The same file, by device and inode: with the runc form containerd's mount namespace
    // shows it at /usr/local/bin.
    let installed_shim = installed.host_root.join(BINARY_DIR).join(SHIM_BINARY);
    let installed_file = file_identity(&installed_shim)?;
    let address = node.containerd_address().display().to_string();
    let nixlet_shims: Vec<(PathBuf, Option<(u64, u64)>)> = procs::shims_of(&address)
        .into_iter()
        .filter_map(|pid| {
            let exe = format!("/proc/{pid}/exe");
            let path = fs::read_link(&exe).ok()?;
            Some((path, file_identity(Path::new(&exe)).ok()))
        })
        .filter(|(path, _)| path.file_name().is_some_and(|n| n == SHIM_BINARY))
        .collect();
    ensure!(
        !nixlet_shims.is_empty()
            && nixlet_shims
                .iter()
                .all(|(_, file)| *file == Some(installed_file)),
        "the pod is not served by the installed shim {}: {nixlet_shims:?}",
        installed_shim.display()
    );
    cri.stop_and_remove_pod(&pod.id)?;
    Ok(())
}

/// Uninstalls and checks that the host root holds exactly what it held before install, byte
/// for byte, and that containerd was asked to restart to drop the runtime again.
fn uninstall(installed: &Installed) -> Result<()> {
    let report = installed.node(&["uninstall"])?;
    eprintln!("uninstall:\n{report}");
    ensure!(
        installed.restart_marker.exists(),
        "uninstall reverted containerd's config but did not restart containerd: {report}"
    );
    let after = snapshot(&installed.host_root)?;
    if after != installed.before {
        let names = |files: &BTreeMap<PathBuf, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
        let changed: Vec<&PathBuf> = after
            .iter()
            .filter(|(path, bytes)| installed.before.get(*path) != Some(bytes))
            .map(|(path, _)| path)
            .collect();
        bail!(
            "uninstall left the host root different: before {:?}, after {:?}, differing {changed:?}",
            names(&installed.before),
            names(&after)
        );
    }
    Ok(())
}

impl Installed {
    /// Runs the staged `nixlet node SUBCOMMAND --host-root … ARGS`, restarting "containerd" by
    /// touching the marker; returns its report (stdout). Outside a cluster: no API server is
    /// asked to label anything.
    fn node(&self, args: &[&str]) -> Result<String> {
        let (subcommand, rest) = args.split_first().context("no subcommand")?;
        let restart = format!("touch {}", self.restart_marker.display());
        let out = Command::new(self.release_dir.join(CLI_BINARY))
            .args(["node", subcommand, "--host-root"])
            .arg(&self.host_root)
            .args(["--restart-command", &restart])
            .args(rest)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NODE_NAME")
            .output()
            .context("running nixlet")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "nixlet node {subcommand} failed ({}): {}{stdout}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }
}

/// (device, inode) of the file at `path`, links followed.
fn file_identity(path: &Path) -> Result<(u64, u64)> {
    let meta = fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// On containerd 2.0 to 2.3 install declares the shim at its host path,
/// /usr/local/bin/containerd-shim-nixlet-v2, which containerd runs as given. The host root is
/// a directory here, so containerd runs in a mount namespace of its own where the host root's
/// binary directory is bind-mounted there (its shims inherit it; the host's /usr/local/bin is
/// untouched).
fn host_bin_dir_wrapper(bin_dir: &Path) -> Vec<String> {
    mount_namespace_wrapper(&format!("mount --bind {} /{BINARY_DIR}", bin_dir.display()))
}

/// Every file and directory below `root` (relative paths; directories with no bytes), so that
/// created directories left behind count as a difference too.
fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let relative = path.strip_prefix(root)?.to_path_buf();
            if path.is_symlink() {
                // The link to containerd's socket: its target is its content.
                let target = fs::read_link(&path)?;
                files.insert(relative, target.into_os_string().into_encoded_bytes());
            } else if path.is_dir() {
                files.insert(relative.join(""), Vec::new());
                pending.push(path);
            } else {
                files.insert(relative, fs::read(&path)?);
            }
        }
    }
    Ok(files)
}
