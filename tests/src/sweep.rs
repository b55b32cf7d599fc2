//! What a test process killed before its cleanup (a CI timeout, a Ctrl-C that hit only the test
//! binary) left behind: its containerd, shims and containers, mounts, cgroups and scratch dir.
//! Swept once per test process, before the first node starts, so that a re-run starts clean.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::thread::sleep;
use std::time::Duration;

use crate::containerd_config::ContainerdPaths;
use crate::{cgroups, leftovers, mounts, procs, scratch};

/// Cleans every abandoned scratch directory (at most once per process).
pub fn sweep_abandoned_nodes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for dir in scratch::abandoned() {
            eprintln!("nixlet-e2e: cleaning up abandoned node {}", dir.display());
            clean(&dir);
        }
    });
}

fn clean(dir: &Path) {
    let paths = ContainerdPaths::under(&dir.join("containerd"));
    let config = paths.config.display().to_string();
    let address = paths.address.display().to_string();
    let mut pids = procs::with_arg("--config", &config);
    // A test may start containerd with a config of its own elsewhere in the scratch dir (one
    // that `nixlet node install` edited in a host root).
    pids.extend(procs::with_arg_under("--config", dir));
    pids.extend(procs::shims_of(&address));
    let doomed = procs::with_descendants(&pids);
    procs::kill_all(doomed.iter().copied());
    for _ in 0..50 {
        if doomed.iter().all(|p| !procs::alive(*p)) {
            break;
        }
        sleep(Duration::from_millis(50));
    }

    let bundles = leftovers::bundles(&paths.bundles());
    let ids: BTreeSet<String> = bundles
        .iter()
        .filter_map(|b| Some(b.file_name()?.to_str()?.to_owned()))
        .collect();
    let mut sockets = leftovers::bundle_sockets(&bundles);
    for id in &ids {
        sockets.insert(
            leftovers::shim_socket(&paths.address, "k8s.io", id),
            String::new(),
        );
    }
    leftovers::remove_stale_sockets(&sockets);
    let roots = [
        paths.runc_root.clone(),
        PathBuf::from(leftovers::DEFAULT_RUNC_ROOT),
    ];
    leftovers::remove_runc_state(&roots, &ids);
    if let Some(name) = dir.file_name() {
        cgroups::remove_tree(&format!("/{}", name.to_string_lossy()));
    }
    mounts::unmount_all_under(dir);
    let _ = fs::remove_dir_all(dir);
}
