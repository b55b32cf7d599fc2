//! Killing everything a Nix command started, not only its process group.
//!
//! Nix runs each builder with `setsid()` (checked with Nix 2.8: the builder of a `nix build`
//! leads a session and a process group of its own), so SIGKILL to `nix`'s group leaves a
//! running build behind, still writing to the store. The tree is therefore walked by parent
//! pid from `/proc` while `nix` is still alive (once it dies its children are re-parented and
//! can no longer be told apart), stopped with SIGSTOP until no new process appears (a stopped
//! process cannot fork), and then killed, each process and each group one of them leads.

use std::collections::{BTreeMap, BTreeSet};

use rustix::process::{Pid, Signal};

/// Rounds of stop-and-look before the kill; each round catches what forked during the last.
const STOP_ROUNDS: usize = 5;

/// `leader` and every process below it in `parents` (pid → parent pid), leader first.
pub fn descendants(leader: i32, parents: &BTreeMap<i32, i32>) -> Vec<i32> {
    let mut tree = vec![leader];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(pid, ppid)| **ppid == parent && **pid != leader)
                .map(|(pid, _)| *pid),
        );
        index += 1;
    }
    tree
}

/// The parent pid of every process, from `/proc/<pid>/stat`.
fn parents() -> BTreeMap<i32, i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// SIGKILLs `leader`'s process group, `leader` and all its descendants, and the groups those
/// lead.
pub fn kill_tree(leader: Pid) {
    let mut seen = BTreeSet::new();
    for _ in 0..STOP_ROUNDS {
        let tree = descendants(leader.as_raw_nonzero().get(), &parents());
        let fresh: Vec<i32> = tree.into_iter().filter(|pid| seen.insert(*pid)).collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh.into_iter().filter_map(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::STOP);
        }
    }
    let _ = rustix::process::kill_process_group(leader, Signal::KILL);
    for pid in seen.into_iter().filter_map(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        // Only a group the process leads itself: its members are its own.
        if rustix::process::getpgid(Some(pid)).is_ok_and(|group| group == pid) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_found_by_parent_pid_whatever_the_groups() {
        let parents = BTreeMap::from([(10, 1), (11, 10), (12, 11), (13, 12), (20, 1), (21, 20)]);
        assert_eq!(descendants(10, &parents), vec![10, 11, 12, 13]);
        assert_eq!(descendants(13, &parents), vec![13]);
        assert_eq!(descendants(99, &parents), vec![99]);
    }

    #[test]
    fn this_process_has_a_parent_in_proc() {
        let parents = parents();
        assert_eq!(
            parents.get(&(std::process::id() as i32)).copied(),
            Some(rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()))
        );
    }
}
