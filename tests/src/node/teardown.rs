//! Tearing a test node down: everything a test started goes, whatever state it is in, and what
//! had to be undone is reported.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use nix::sys::signal::Signal;

use super::TestNode;
use crate::{cgroups, leftovers, mounts, procs, shim_build, wait};

/// Leaks fail a test unless `NIXLET_E2E_STRICT=0` (for bisecting a leak without noise).
const STRICT_ENV: &str = "NIXLET_E2E_STRICT";

fn strict_leaks() -> bool {
    std::env::var(STRICT_ENV).map_or(true, |v| v != "0")
}

/// What a teardown found and undid.
#[derive(Debug, Default)]
pub(super) struct TeardownReport {
    /// Failures of the harness's own teardown (CRI errors, processes that had to be killed,
    /// cgroups that would not go): they fail the test.
    pub(super) problems: Vec<String>,
    /// Files a shim should have removed itself (its socket, runc state). Removed here and
    /// printed, and fail the test unless `NIXLET_E2E_STRICT=0`: a shim must clean up after itself.
    pub(super) leaks: Vec<String>,
}

impl TestNode {
    /// Tears the node down now and checks that nothing is left: no shim of this containerd, no
    /// mount below the scratch directory, no scratch directory, no cgroup.
    pub fn finish(mut self) -> Result<()> {
        let dir = self.scratch.as_ref().map(|s| s.path().to_path_buf());
        let tail = self.containerd_log_tail(40);
        let report = self.teardown();
        self.check_clean(dir, report)
            .map_err(|e| anyhow!("{e:#}\n---- containerd log tail ----\n{tail}"))
    }

    fn check_clean(&self, dir: Option<PathBuf>, report: TeardownReport) -> Result<()> {
        let shims = procs::shims_of(&self.containerd_paths.address.display().to_string());
        if !shims.is_empty() {
            bail!("shims still running after teardown: {shims:?}");
        }
        if let Some(dir) = dir {
            let left = mounts::under(&dir)?;
            if !left.is_empty() {
                bail!("mounts left after teardown: {left:?}");
            }
            if dir.exists() {
                bail!("{} still exists after teardown", dir.display());
            }
        }
        for leak in &report.leaks {
            eprintln!("{}: leak: {leak}", self.test);
        }
        if !report.problems.is_empty() {
            bail!("teardown problems: {}", report.problems.join("; "));
        }
        if strict_leaks() && !report.leaks.is_empty() {
            bail!(
                "leaks (set {STRICT_ENV}=0 to ignore): {}",
                report.leaks.join("; ")
            );
        }
        Ok(())
    }

    /// Stops and removes all pods through CRI, kills containerd, kills its shims and whatever
    /// runs below them, removes leaked shim files and the node's cgroups, unmounts and removes
    /// the scratch directory. Idempotent; cleanup carries on whatever goes wrong.
    pub(super) fn teardown(&mut self) -> TeardownReport {
        let mut report = TeardownReport::default();
        let (ids, sockets) = self.shim_traces();
        if let Some(cri) = self.cri.take() {
            report.problems.extend(cri.remove_all_pods());
        }
        if let Some(mut containerd) = self.containerd.take() {
            containerd.kill(Signal::SIGTERM, Duration::from_secs(5));
        }
        self.kill_leftover_shims(&mut report.problems);
        for (socket, origin) in leftovers::remove_stale_sockets(&sockets) {
            let socket = socket.display();
            report
                .leaks
                .push(format!("removed stale shim socket {socket} ({origin})"));
        }
        let runc_roots = [
            self.containerd_paths.runc_root.clone(),
            PathBuf::from(leftovers::DEFAULT_RUNC_ROOT),
        ];
        for state in leftovers::remove_runc_state(&runc_roots, &ids) {
            report
                .leaks
                .push(format!("removed runc state {}", state.display()));
        }
        self.remove_cgroups(&mut report.problems);
        self.keep_containerd_log(&report);
        self.environments = None;
        self.fixtures = None;
        // Scratch's own drop unmounts what is left below it and removes it.
        self.scratch = None;
        report
    }

    /// Waits briefly for this containerd's shims to exit (those of removed pods do so on their
    /// own), then kills what is left, with everything running below it.
    fn kill_leftover_shims(&self, problems: &mut Vec<String>) {
        let address = self.containerd_paths.address.display().to_string();
        let _ = wait::poll(
            "shims to exit",
            Duration::from_secs(3),
            Duration::from_millis(50),
            || Ok(procs::shims_of(&address).is_empty().then_some(())),
        );
        let leftovers = procs::with_descendants(&procs::shims_of(&address));
        if leftovers.is_empty() {
            return;
        }
        problems.push(format!("killed leftover shim processes {leftovers:?}"));
        procs::kill_all(leftovers.iter().copied());
        let gone = wait::poll(
            "leftover shims to die",
            Duration::from_secs(5),
            Duration::from_millis(50),
            || Ok(leftovers.iter().all(|p| !procs::alive(*p)).then_some(())),
        );
        if let Err(e) = gone {
            problems.push(format!("{e:#}"));
        }
    }

    /// Every pod and container id of this node (from CRI, and from the task bundles in case
    /// containerd is gone) and every shim socket those ids can have: the runc shim's socket is
    /// derived from containerd's address and the group id; any other shim's is in the bundle's
    /// `address` file.
    fn shim_traces(&self) -> (BTreeSet<String>, leftovers::SocketOrigins) {
        let bundles = leftovers::bundles(&self.containerd_paths.bundles());
        let mut ids: BTreeSet<String> = bundles
            .iter()
            .filter_map(|b| Some(b.file_name()?.to_str()?.to_owned()))
            .collect();
        if let Some(cri) = self.cri.as_ref() {
            ids.extend(cri.pod_ids().unwrap_or_default());
            ids.extend(cri.container_ids().unwrap_or_default());
        }
        let mut sockets = leftovers::bundle_sockets(&bundles);
        for id in &ids {
            let socket = leftovers::shim_socket(&self.containerd_paths.address, "k8s.io", id);
            sockets.insert(socket, format!("runc shim socket of group {id}"));
        }
        (ids, sockets)
    }

    /// Copies containerd's log (which carries the shims' logs too), followed by the teardown's
    /// findings, to `<target>/nixlet-e2e-logs/<test>.containerd.log`, where it outlives the
    /// scratch directory.
    fn keep_containerd_log(&self, report: &TeardownReport) {
        let Ok(mut log) = fs::read_to_string(&self.containerd_paths.log) else {
            return;
        };
        let Ok(target) = shim_build::target_dir() else {
            return;
        };
        for problem in &report.problems {
            log.push_str(&format!("nixlet-e2e teardown problem: {problem}\n"));
        }
        for leak in &report.leaks {
            log.push_str(&format!("nixlet-e2e teardown leak: {leak}\n"));
        }
        let dir = target.join("nixlet-e2e-logs");
        let kept = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(dir.join(format!("{}.containerd.log", self.test)), log));
        if let Err(e) = kept {
            eprintln!("{}: could not keep containerd's log: {e}", self.test);
        }
    }

    /// Killed processes leave their cgroups busy for a moment; retry briefly.
    fn remove_cgroups(&self, problems: &mut Vec<String>) {
        let mut left = cgroups::remove_tree(&self.cgroup_parent);
        for _ in 0..20 {
            if left.is_empty() {
                return;
            }
            sleep(Duration::from_millis(100));
            left = cgroups::remove_tree(&self.cgroup_parent);
        }
        problems.push(format!("cgroups left: {left:?}"));
    }
}
