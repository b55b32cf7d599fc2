//! Who wrote a record file: a pid and that process's start time, so that a reused pid is not
//! mistaken for the shim that wrote the file.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: clock ticks after boot.
    pub start_ticks: u64,
}

impl ProcessIdentity {
    /// This process, as `/proc/self/stat` tells.
    pub fn current() -> std::io::Result<ProcessIdentity> {
        let pid = std::process::id();
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let start_ticks = start_ticks(&stat)
            .ok_or_else(|| std::io::Error::other(format!("unexpected /proc/self/stat {stat:?}")))?;
        Ok(ProcessIdentity { pid, start_ticks })
    }

    /// Whether this exact process still runs, looked up below `proc_root` (the host's `/proc`:
    /// the DaemonSet runs with `hostPID`). An unreadable entry counts as gone, and so does a
    /// zombie: it writes nothing more. (A shim daemon is orphaned once its `start` exits; an
    /// init that reaps lazily leaves it a zombie for a while, as seen on these VMs.)
    pub fn is_alive(&self, proc_root: &Path) -> bool {
        let Ok(stat) = std::fs::read_to_string(proc_root.join(self.pid.to_string()).join("stat"))
        else {
            return false;
        };
        start_ticks(&stat) == Some(self.start_ticks) && !is_dead_state(&stat)
    }

    /// `shim-<pid>-<start>.jsonl`.
    pub fn file_name(&self) -> String {
        format!("shim-{}-{}.jsonl", self.pid, self.start_ticks)
    }

    /// The writer of a file named by [`ProcessIdentity::file_name`]; `None` for any other name.
    pub fn from_file_name(name: &str) -> Option<ProcessIdentity> {
        let rest = name.strip_prefix("shim-")?.strip_suffix(".jsonl")?;
        let (pid, start) = rest.split_once('-')?;
        Some(ProcessIdentity {
            pid: pid.parse().ok()?,
            start_ticks: start.parse().ok()?,
        })
    }
}

/// Whether a `stat` line's state (field 3) is zombie or dead.
fn is_dead_state(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
        .is_some_and(|state| matches!(state, "Z" | "X" | "x"))
}

/// The start time in a `stat` line. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted after its last `)`: state is field 3 there, start time field 22.
fn start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_not_ours() {
        let me = ProcessIdentity {
            pid: 42,
            start_ticks: 123456,
        };
        assert_eq!(me.file_name(), "shim-42-123456.jsonl");
        assert_eq!(ProcessIdentity::from_file_name(&me.file_name()), Some(me));
        for other in [
            "shim-42.jsonl",
            "x-1-2.jsonl",
            "shim-a-2.jsonl",
            "shim-1-2.json",
        ] {
            assert_eq!(ProcessIdentity::from_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn start_time_is_read_after_an_odd_command_name() {
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(start_ticks(stat), Some(98765));
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessIdentity::current().unwrap();
        assert!(me.is_alive(Path::new("/proc")));
        let reused = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive(Path::new("/proc")));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let stat_path = format!("/proc/{}/stat", child.id());
        // Not reaped yet: once `true` exits, it stays a zombie until `wait` below.
        let stat = (0..200)
            .find_map(|_| {
                let stat = std::fs::read_to_string(&stat_path).unwrap();
                if is_dead_state(&stat) {
                    return Some(stat);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            })
            .expect("the child became a zombie");
        let zombie = ProcessIdentity {
            pid: child.id(),
            start_ticks: start_ticks(&stat).unwrap(),
        };
        assert!(!zombie.is_alive(Path::new("/proc")));
        child.wait().unwrap();
    }
}
