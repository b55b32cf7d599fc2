//! A test node: scratch directory, nixlet shim, node config, private containerd with imported
//! images, Nix fixtures and a CRI client, torn down completely when dropped, on success, failure
//! or panic alike.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::containerd::{self, Containerd, LaunchSpec};
use crate::containerd_config::{self, ContainerdPaths};
use crate::cri::{Cri, PodSpec};
use crate::images::{self, BUSYBOX_IMAGE};
use crate::mounts::{self, MountEntry};
use crate::nix_fixture::{Fixture, FixtureDir};
use crate::node_config::{self, EnvironmentSource};
use crate::scratch::Scratch;
use crate::shim_build::{self, SHIM_BINARY};
use crate::{containerd_version, prereq, sweep, wait};

mod teardown;

/// Whether a node gets the nixlet shim on containerd's PATH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shim {
    /// Built from this workspace (`cargo build -p nixlet-shim`) and installed.
    Built,
    /// Not installed: the nixlet handler fails, runc works.
    Absent,
}

/// What a test that brings its own containerd config (see [`TestNode::run_test_with_containerd`])
/// has to work with before containerd starts.
pub struct Prelaunch<'a> {
    /// The node's scratch directory (removed with the node).
    pub scratch: &'a Path,
    /// The root, state and sockets the node's containerd must use.
    pub paths: &'a ContainerdPaths,
    /// The node config the harness wrote (its `dir` source is where [`TestNode::publish`] puts
    /// environments).
    pub nixlet_config: &'a Path,
    /// A containerd config for `paths` as a node has it before nixlet: the runc handler only.
    pub config_without_nixlet: String,
}

/// Prepares a node's containerd config and says how to start containerd with it.
type Launch<'a> = Box<dyn FnOnce(&Prelaunch<'_>) -> Result<LaunchSpec> + 'a>;

/// Given the scratch directory, the argv prefix containerd is started through.
type Wrapper<'a> = Box<dyn FnOnce(&Path) -> Vec<String> + 'a>;

pub struct TestNode {
    test: String,
    containerd_paths: ContainerdPaths,
    cgroup_parent: String,
    pods_made: Cell<u32>,
    cri: Option<Cri>,
    containerd: Option<Containerd>,
    environments: Option<EnvironmentSource>,
    fixtures: Option<FixtureDir>,
    /// The node config file the shim reads (`NIXLET_CONFIG`).
    nixlet_config: PathBuf,
    /// Removed last: everything above lives in it.
    scratch: Option<Scratch>,
}

impl TestNode {
    /// Starts a node for `test`, or returns `None` after printing why this host cannot (a panic
    /// in CI instead, see [`prereq::ready`]). Panics if a present host fails to start one.
    pub fn start_or_skip(test: &str, shim: Shim) -> Option<Self> {
        if !prereq::ready(test) {
            return None;
        }
        match Self::start(test, shim) {
            Ok(node) => Some(node),
            Err(e) => panic!("{test}: starting the test node failed: {e:#}"),
        }
    }

    /// Runs `body` on a fresh node with the nixlet shim (or skips, see [`Self::start_or_skip`]),
    /// then tears the node down and checks that nothing is left. An error fails the test with
    /// containerd's log tail.
    pub fn run_test(test: &str, body: impl FnOnce(&mut TestNode) -> Result<()>) {
        Self::run_with(test, Shim::Built, body);
    }

    /// Like [`Self::run_test`] on a node without the nixlet shim (only the runc handler works):
    /// for checks of the harness that must not depend on the state of the shim.
    pub fn run_runc_test(test: &str, body: impl FnOnce(&mut TestNode) -> Result<()>) {
        Self::run_with(test, Shim::Absent, body);
    }

    /// Like [`Self::run_test`], but `launch` writes containerd's config and returns how to start
    /// containerd (config file, the directory put first on its PATH, `NIXLET_CONFIG`), e.g. a
    /// config and shim that `nixlet node install` put into a host root. The harness does not
    /// install its own shim on such a node.
    pub fn run_test_with_containerd(
        test: &str,
        launch: impl FnOnce(&Prelaunch<'_>) -> Result<LaunchSpec>,
        body: impl FnOnce(&mut TestNode) -> Result<()>,
    ) {
        if !prereq::ready(test) {
            return;
        }
        let node = match Self::start_launched(test, Shim::Absent, Some(Box::new(launch))) {
            Ok(node) => node,
            Err(e) => panic!("{test}: starting the test node failed: {e:#}"),
        };
        Self::run_body(test, node, body);
    }

    fn run_with(test: &str, shim: Shim, body: impl FnOnce(&mut TestNode) -> Result<()>) {
        let Some(node) = Self::start_or_skip(test, shim) else {
            return;
        };
        Self::run_body(test, node, body);
    }

    fn run_body(test: &str, mut node: TestNode, body: impl FnOnce(&mut TestNode) -> Result<()>) {
        if let Err(e) = body(&mut node) {
            // The node's Drop prints containerd's log tail while this panic unwinds.
            panic!("{test}: {e:#}");
        }
        if let Err(e) = node.finish() {
            panic!("{test}: unclean teardown: {e:#}");
        }
    }

    pub fn start(test: &str, shim: Shim) -> Result<Self> {
        Self::start_launched(test, shim, None)
    }

    /// Like [`Self::start`] with the nixlet shim, with containerd started through `wrapper`
    /// (an argv prefix that ends by exec'ing the rest, e.g. `unshare --mount … sh -c '…; exec
    /// "$@"' sh`): containerd, its shims and pods then live in whatever the wrapper set up. The
    /// scratch directory is made first and handed to `wrapper` to place what it needs there.
    pub fn start_wrapped(test: &str, wrapper: impl FnOnce(&Path) -> Vec<String>) -> Result<Self> {
        Self::start_inner(test, Shim::Built, None, Some(Box::new(wrapper)))
    }

    fn start_launched(test: &str, shim: Shim, launch: Option<Launch<'_>>) -> Result<Self> {
        Self::start_inner(test, shim, launch, None)
    }

    fn start_inner(
        test: &str,
        shim: Shim,
        launch: Option<Launch<'_>>,
        wrapper: Option<Wrapper<'_>>,
    ) -> Result<Self> {
        sweep::sweep_abandoned_nodes();
        eprintln!("{test}: containerd {}", containerd_version::installed()?);
        let scratch = Scratch::new()?;
        let suffix = scratch
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("node")
            .to_owned();
        let mut node = Self {
            test: test.to_owned(),
            containerd_paths: ContainerdPaths::under(&scratch.path().join("containerd")),
            cgroup_parent: format!("/{suffix}"),
            pods_made: Cell::new(0),
            cri: None,
            containerd: None,
            environments: None,
            fixtures: None,
            nixlet_config: scratch.path().join("nixlet-config.toml"),
            scratch: Some(scratch),
        };
        // On error `node` is dropped here, which tears down whatever was already started.
        let wrapper = wrapper
            .map(|make| make(node.scratch.as_ref().expect("scratch exists").path()))
            .unwrap_or_default();
        if let Err(e) = node.boot(shim, launch, wrapper) {
            let tail = node.containerd_log_tail(40);
            bail!("{e:#}\n---- containerd log tail ----\n{tail}");
        }
        Ok(node)
    }

    fn boot(&mut self, shim: Shim, launch: Option<Launch<'_>>, wrapper: Vec<String>) -> Result<()> {
        let scratch = self.scratch.as_ref().expect("scratch exists until cleanup");
        let shim_dir = scratch.subdir("bin")?;
        if shim == Shim::Built {
            let binary = shim_build::shim_binary()?;
            fs::copy(&binary, shim_dir.join(SHIM_BINARY))
                .with_context(|| format!("copying {}", binary.display()))?;
        }

        let environments = EnvironmentSource::new(&scratch.subdir("environments")?)?;
        let nixlet_config = self.nixlet_config.clone();
        node_config::write_node_config(&nixlet_config, environments.root())?;
        self.environments = Some(environments);
        self.fixtures = Some(FixtureDir::prepare(&scratch.subdir("nix")?)?);
        let images_dir = scratch.subdir("images")?;

        self.containerd = Some(match launch {
            None => {
                let spec = LaunchSpec {
                    paths: self.containerd_paths.clone(),
                    shim_dir,
                    nixlet_config,
                    wrapper,
                };
                Containerd::start(spec, BUSYBOX_IMAGE)?
            }
            Some(launch) => {
                let paths = &self.containerd_paths;
                let spec = launch(&Prelaunch {
                    scratch: scratch.path(),
                    paths,
                    nixlet_config: &nixlet_config,
                    config_without_nixlet: containerd_config::render_without_nixlet(
                        paths,
                        BUSYBOX_IMAGE,
                        &containerd::snapshotter(&paths.dir),
                    ),
                })?;
                // Later rewrites (set_node_config_extra …) go to the file the shim reads.
                self.nixlet_config = spec.nixlet_config.clone();
                Containerd::start_configured(spec)?
            }
        });
        self.connect_cri()?;
        images::build_and_import(&images_dir, &self.containerd_paths.address)?;
        Ok(())
    }

    /// Waits until the CRI plugin answers Version, then keeps that connection.
    fn connect_cri(&mut self) -> Result<()> {
        let address = self.containerd_paths.address.clone();
        let containerd = self.containerd.as_mut().context("containerd not started")?;
        let cri = wait::poll(
            "the CRI socket to answer",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                containerd.check_running()?;
                Ok(Cri::connect(&address)
                    .and_then(|cri| cri.version().map(|_| cri))
                    .ok())
            },
        )?;
        self.cri = Some(cri);
        Ok(())
    }

    pub fn cri(&self) -> &Cri {
        self.cri
            .as_ref()
            .expect("CRI is connected while the node runs")
    }

    /// A pod spec under `handler` with a unique uid, its own log directory, and the node's
    /// cgroup parent (so cleanup can remove its cgroups).
    pub fn pod(&self, name: &str, handler: &str) -> PodSpec {
        let n = self.pods_made.get() + 1;
        self.pods_made.set(n);
        let scratch = self.scratch.as_ref().expect("scratch exists until cleanup");
        PodSpec {
            name: name.to_owned(),
            uid: format!("{}-{n}", self.cgroup_parent.trim_start_matches('/')),
            handler: handler.to_owned(),
            annotations: Default::default(),
            log_directory: scratch.path().join("pod-logs").join(format!("{name}-{n}")),
            cgroup_parent: self.cgroup_parent.clone(),
            attempt: 0,
        }
    }

    /// Publishes an environment in the node's `dir` source.
    pub fn publish(&self, reference: &str, generation: u32, manifest: &str) -> Result<()> {
        self.environments
            .as_ref()
            .context("node is torn down")?
            .publish(reference, generation, manifest)
    }

    /// Publishes `manifest` and its `manifest.lock` in the node's `dir` source.
    pub fn publish_locked(
        &self,
        reference: &str,
        generation: u32,
        manifest: &str,
        lock: &[u8],
    ) -> Result<()> {
        self.environments
            .as_ref()
            .context("node is torn down")?
            .publish_locked(reference, generation, manifest, lock)
    }

    /// Writes the `current` file of an environment in the node's `dir` source.
    pub fn set_current(&self, reference: &str, generation: u32) -> Result<()> {
        self.environments
            .as_ref()
            .context("node is torn down")?
            .set_current(reference, generation)
    }

    /// Rewrites the node config as the harness writes it plus `extra` TOML (substituters, more
    /// sources, `[fetch]`); the shim reads it again at the next Create.
    pub fn set_node_config_extra(&self, extra: &str) -> Result<()> {
        let root = self
            .environments
            .as_ref()
            .context("node is torn down")?
            .root();
        node_config::write_node_config_with(&self.nixlet_config, root, extra)
    }

    /// Rewrites the node config as the harness writes it with `top` (top-level keys such as
    /// `gc_roots_dir`) before its first table, `runtime` as the body of `[runtime]` and
    /// `extra` TOML after it; new shims read it.
    pub fn set_node_config(&self, top: &str, runtime: &str, extra: &str) -> Result<()> {
        let root = self
            .environments
            .as_ref()
            .context("node is torn down")?
            .root();
        node_config::write_node_config_full(&self.nixlet_config, root, top, runtime, extra)
    }

    /// The node config file the shims read (`NIXLET_CONFIG`).
    pub fn node_config_path(&self) -> &Path {
        &self.nixlet_config
    }

    /// The node's scratch directory (containerd's root and state, logs, sockets' bundles).
    pub fn scratch_path(&self) -> Option<&Path> {
        self.scratch.as_ref().map(Scratch::path)
    }

    /// Rewrites the node config as the harness writes it, with `binary_name` as the OCI
    /// runtime (`[runtime] binary_name`); the shim reads it again at the next Create.
    pub fn set_oci_runtime(&self, binary_name: &str) -> Result<()> {
        let root = self
            .environments
            .as_ref()
            .context("node is torn down")?
            .root();
        node_config::write_node_config_for_runtime(&self.nixlet_config, root, binary_name, "")
    }

    /// Builds the fixture for `tag` and publishes its `hello` as generation 1 of `reference`.
    pub fn publish_hello(&self, reference: &str, tag: &str) -> Result<Fixture> {
        let fixture = self.fixture(tag)?;
        self.publish(
            reference,
            1,
            &node_config::manifest(&[("hello", &fixture.hello)], &[]),
        )?;
        Ok(fixture)
    }

    /// The root, state and sockets of this node's containerd.
    pub fn containerd_paths(&self) -> &ContainerdPaths {
        &self.containerd_paths
    }

    /// Rewrites the node config with `runtime` as the body of its `[runtime]` table.
    pub fn set_runtime_config(&self, runtime: &str) -> Result<()> {
        let root = self
            .environments
            .as_ref()
            .context("node is torn down")?
            .root();
        node_config::write_node_config_with_runtime(&self.nixlet_config, root, runtime, "")
    }

    /// nixlet's `state_dir` on this node (the shims' telemetry records live below it).
    pub fn state_dir(&self) -> PathBuf {
        node_config::state_dir_for(&self.nixlet_config)
    }

    /// A directory of the test's own below the node's scratch dir (removed with the node).
    pub fn scratch_subdir(&self, name: &str) -> Result<PathBuf> {
        self.scratch
            .as_ref()
            .context("node is torn down")?
            .subdir(name)
    }

    /// Builds (or reuses) the Nix fixture paths for `tag`, rooted in this node's scratch dir.
    pub fn fixture(&self, tag: &str) -> Result<Fixture> {
        self.fixtures
            .as_ref()
            .context("node is torn down")?
            .build(tag)
    }

    /// A valid store path that is not on this node.
    pub fn unbuilt_store_path(&self, tag: &str) -> Result<String> {
        self.fixtures
            .as_ref()
            .context("node is torn down")?
            .unbuilt_hello(tag)
    }

    /// The task bundle directory of a container (its rootfs is mounted below it while it runs).
    pub fn bundle(&self, container_id: &str) -> PathBuf {
        self.containerd_paths.bundle(container_id)
    }

    /// Host mounts below a container's bundle directory.
    pub fn mounts_of(&self, container_id: &str) -> Result<Vec<MountEntry>> {
        mounts::under(&self.bundle(container_id))
    }

    pub fn containerd_address(&self) -> &Path {
        &self.containerd_paths.address
    }

    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().and_then(Containerd::pid)
    }

    /// Kills containerd (SIGKILL: the shims see a crash) and starts it again with the same
    /// config; returns once the CRI answers again.
    pub fn restart_containerd(&mut self) -> Result<()> {
        self.cri = None;
        let containerd = self.containerd.as_mut().context("containerd not started")?;
        let before = containerd.pid();
        containerd.restart()?;
        eprintln!(
            "{}: containerd restarted (pid {before:?} -> {:?})",
            self.test,
            containerd.pid()
        );
        self.connect_cri()
    }

    pub fn containerd_log(&self) -> String {
        self.containerd
            .as_ref()
            .map(Containerd::log)
            .unwrap_or_default()
    }

    pub fn containerd_log_tail(&self, lines: usize) -> String {
        self.containerd
            .as_ref()
            .map(|c| c.log_tail(lines))
            .unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if self.scratch.is_none() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {}: containerd log tail ----\n{}\n---- end of containerd log ----",
                self.test,
                self.containerd_log_tail(80)
            );
        }
        let report = self.teardown();
        for problem in report.problems.iter().chain(&report.leaks) {
            eprintln!("{}: cleanup: {problem}", self.test);
        }
    }
}
