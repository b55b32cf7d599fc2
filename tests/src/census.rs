//! What pods can leave on a node, counted: shim processes of one containerd, mounts, shim
//! sockets, GC roots, store trees, store temporaries, telemetry files, and the open descriptors
//! and memory of the node agent. A census is taken before and after some pods came and went;
//! what the second has and the first had not is a leak.
//!
//! Everything is found from what belongs to one test node (its containerd's address, its
//! scratch directory, its own GC-root and tree directories, names carrying the test's own
//! markers), never by scanning for names, so another containerd or test on the host is neither
//! counted nor touched.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::store_paths::STORE_DIR;
use crate::{leftovers, mounts, procs};

/// Where one node keeps what a census looks at.
#[derive(Debug, Clone)]
pub struct CensusScope {
    /// containerd's socket: its shims carry it as `-address`.
    pub address: PathBuf,
    /// containerd's pid, whose mount namespace is read too (it may have a private one).
    pub containerd_pid: Option<u32>,
    /// Mounts at or below these count (the node's scratch directory, its trees directory).
    pub mount_prefixes: Vec<PathBuf>,
    /// The node's own GC-root directory (`gc_roots_dir`).
    pub gc_roots_dir: Option<PathBuf>,
    /// The node's own store-tree directory (`[mounts] trees_dir`).
    pub trees_dir: Option<PathBuf>,
    /// `<state_dir>/telemetry`.
    pub telemetry_dir: Option<PathBuf>,
    /// Store entries whose name contains one of these are the test's own (its tags, its
    /// environment names): their temporaries and lock files are counted.
    pub store_markers: Vec<String>,
    /// `nixlet node run`, whose descriptors and memory are measured.
    pub agent_pid: Option<u32>,
    /// Pod and container ids used so far: their shim sockets are looked for.
    pub ids: BTreeSet<String>,
}

/// One look at the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Shim processes of this containerd (and what runs below them), as `pid argv`.
    pub processes: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub sockets: BTreeSet<String>,
    pub gc_roots: BTreeSet<String>,
    /// Store trees and what interrupted tree builds left (`.<hash>.tmp`).
    pub trees: BTreeSet<String>,
    /// `/nix/store/.nixlet-*` temporaries and `*.lock` files of the test's paths.
    pub store_temporaries: BTreeSet<String>,
    /// Telemetry files whose writer has exited.
    pub telemetry_files: BTreeSet<String>,
    /// Open descriptors of the agent.
    pub agent_fds: Option<usize>,
    /// Resident memory of the agent, KiB.
    pub agent_rss_kib: Option<u64>,
}

/// How much the agent may grow between two censuses before it counts as a leak: a few
/// descriptors come and go with scrapes and telemetry reads, and an allocator keeps some memory.
pub const AGENT_FD_SLACK: usize = 4;
pub const AGENT_RSS_SLACK_KIB: u64 = 4096;

impl Census {
    pub fn take(scope: &CensusScope) -> Census {
        let address = scope.address.display().to_string();
        let shims = procs::shims_of(&address);
        let processes = procs::with_descendants(&shims)
            .into_iter()
            .filter_map(|pid| Some(format!("{pid} {}", procs::cmdline(pid)?.join(" "))))
            .collect();
        let mut mount_points = BTreeSet::new();
        let tables = std::iter::once(PathBuf::from("/proc/self/mountinfo")).chain(
            scope
                .containerd_pid
                .map(|pid| PathBuf::from(format!("/proc/{pid}/mountinfo"))),
        );
        for table in tables {
            for entry in mounts::read_table(&table).unwrap_or_default() {
                if scope
                    .mount_prefixes
                    .iter()
                    .any(|p| entry.mount_point.starts_with(p))
                {
                    mount_points.insert(format!(
                        "{} ({})",
                        entry.mount_point.display(),
                        entry.fs_type
                    ));
                }
            }
        }
        let sockets = scope
            .ids
            .iter()
            .map(|id| leftovers::shim_socket(&scope.address, "k8s.io", id))
            .filter(|socket| socket.exists())
            .map(|socket| socket.display().to_string())
            .collect();
        let (agent_fds, agent_rss_kib) = scope
            .agent_pid
            .map_or((None, None), |pid| (open_fds(pid), rss_kib(pid)));
        Census {
            processes,
            mounts: mount_points,
            sockets,
            gc_roots: names_in(scope.gc_roots_dir.as_deref()),
            trees: names_in(scope.trees_dir.as_deref())
                .into_iter()
                .filter(|name| !name.ends_with(".lock"))
                .collect(),
            store_temporaries: store_temporaries(&scope.store_markers),
            telemetry_files: dead_telemetry(scope.telemetry_dir.as_deref()),
            agent_fds,
            agent_rss_kib,
        }
    }

    /// What `self` (taken later) has that `before` had not, one line each.
    pub fn leaks_since(&self, before: &Census) -> Vec<String> {
        let mut leaks = Vec::new();
        let new = |kind: &str, now: &BTreeSet<String>, then: &BTreeSet<String>| {
            now.difference(then)
                .map(|item| format!("{kind}: {item}"))
                .collect::<Vec<_>>()
        };
        leaks.extend(new("process", &self.processes, &before.processes));
        leaks.extend(new("mount", &self.mounts, &before.mounts));
        leaks.extend(new("socket", &self.sockets, &before.sockets));
        leaks.extend(new("gc root", &self.gc_roots, &before.gc_roots));
        leaks.extend(new("store tree", &self.trees, &before.trees));
        leaks.extend(new(
            "store temporary",
            &self.store_temporaries,
            &before.store_temporaries,
        ));
        leaks.extend(new(
            "telemetry file",
            &self.telemetry_files,
            &before.telemetry_files,
        ));
        if let (Some(now), Some(then)) = (self.agent_fds, before.agent_fds) {
            if now > then + AGENT_FD_SLACK {
                leaks.push(format!("agent descriptors: {then} -> {now}"));
            }
        }
        if let (Some(now), Some(then)) = (self.agent_rss_kib, before.agent_rss_kib) {
            if now > then + AGENT_RSS_SLACK_KIB {
                leaks.push(format!("agent memory: {then} KiB -> {now} KiB"));
            }
        }
        leaks
    }
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// `VmRSS` of `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn names_in(dir: Option<&Path>) -> BTreeSet<String> {
    let Some(Ok(entries)) = dir.map(fs::read_dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// nixlet's temporaries (`.nixlet-<base>`) and lock files (`<base>.lock`) of the test's paths.
fn store_temporaries(markers: &[String]) -> BTreeSet<String> {
    if markers.is_empty() {
        return BTreeSet::new();
    }
    names_in(Some(Path::new(STORE_DIR)))
        .into_iter()
        .filter(|name| name.starts_with(".nixlet-") || name.ends_with(".lock"))
        .filter(|name| markers.iter().any(|m| name.contains(m.as_str())))
        .map(|name| format!("{STORE_DIR}/{name}"))
        .collect()
}

/// Telemetry files (`shim-<pid>-<start ticks>.jsonl`) whose writing shim no longer runs.
fn dead_telemetry(dir: Option<&Path>) -> BTreeSet<String> {
    names_in(dir)
        .into_iter()
        .filter(|name| {
            let writer = name
                .strip_prefix("shim-")
                .and_then(|rest| rest.strip_suffix(".jsonl"))
                .and_then(|rest| rest.split_once('-'));
            !writer.is_some_and(|(pid, start)| procs::identity_alive(&format!("{pid} {start}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_what_is_new_counts_and_the_agent_gets_slack() {
        let before = Census {
            mounts: set(&["/a (tmpfs)"]),
            agent_fds: Some(10),
            agent_rss_kib: Some(10_000),
            ..Default::default()
        };
        let mut after = before.clone();
        assert!(after.leaks_since(&before).is_empty());
        after.agent_fds = Some(10 + AGENT_FD_SLACK);
        after.mounts = set(&["/a (tmpfs)", "/b (overlay)"]);
        after.gc_roots = set(&["k8s.io.abc"]);
        after.agent_rss_kib = Some(10_000 + AGENT_RSS_SLACK_KIB + 1);
        assert_eq!(
            after.leaks_since(&before),
            vec![
                "mount: /b (overlay)".to_string(),
                "gc root: k8s.io.abc".to_string(),
                format!(
                    "agent memory: 10000 KiB -> {} KiB",
                    10_000 + AGENT_RSS_SLACK_KIB + 1
                ),
            ]
        );
    }
}
