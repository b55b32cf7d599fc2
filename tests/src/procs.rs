//! Processes found through `/proc`: the shims that one private containerd started outlive it by
//! design (that is how containerd restarts without killing pods), so cleanup must find them by
//! their `-address` argument and kill them and the containers below them.

use std::collections::BTreeSet;
use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The argv of process `pid`, or `None` if it is gone or a kernel thread.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (the comm field may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// `<pid> <start time>`: names one process for good, since pids get reused but not together
/// with the start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot).
pub fn identity(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let start_time = after_comm.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

/// Whether the process named by an [`identity`] still runs.
pub fn identity_alive(identity: &str) -> bool {
    let pid = identity.split(' ').next().and_then(|p| p.parse().ok());
    pid.and_then(self::identity).as_deref() == Some(identity)
}

/// Pids whose argv contains `flag` immediately followed by `value`.
pub fn with_arg(flag: &str, value: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            cmdline(*pid).is_some_and(|argv| argv.windows(2).any(|w| w[0] == flag && w[1] == value))
        })
        .collect()
}

/// Pids whose argv contains `flag` immediately followed by a path at or below `dir`.
pub fn with_arg_under(flag: &str, dir: &std::path::Path) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            cmdline(*pid).is_some_and(|argv| {
                argv.windows(2)
                    .any(|w| w[0] == flag && std::path::Path::new(&w[1]).starts_with(dir))
            })
        })
        .collect()
}

/// Every pid currently listed in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether an argv belongs to a containerd shim serving the containerd at `address`.
pub fn is_shim_of(argv: &[String], address: &str) -> bool {
    let is_shim = argv
        .first()
        .and_then(|a| a.rsplit('/').next())
        .is_some_and(|name| name.starts_with("containerd-shim"));
    is_shim
        && argv
            .windows(2)
            .any(|w| w[0] == "-address" && w[1] == address)
}

/// Shim processes started for the containerd listening on `address`.
pub fn shims_of(address: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| cmdline(*pid).is_some_and(|argv| is_shim_of(&argv, address)))
        .collect()
}

/// nixlet's shim daemons serving the containerd at `address` (one per pod, serving ttrpc on
/// `-socket`), not its short `start`/`delete` runs nor the runc shims it delegates to.
pub fn nixlet_daemons_of(address: &str) -> Vec<i32> {
    shims_of(address)
        .into_iter()
        .filter(|pid| {
            cmdline(*pid).is_some_and(|argv| {
                argv[0].ends_with("containerd-shim-nixlet-v2")
                    && argv.iter().any(|a| a == "-socket")
            })
        })
        .collect()
}

/// `roots` and all their descendants.
pub fn with_descendants(roots: &[i32]) -> BTreeSet<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent(pid)?)))
        .collect();
    let mut found: BTreeSet<i32> = roots.iter().copied().collect();
    loop {
        let before = found.len();
        for (pid, ppid) in &parents {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Whether `pid` still exists (a zombie counts as gone for our purposes only once reaped).
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Sends SIGKILL to each pid; pids that already vanished are ignored.
pub fn kill_all(pids: impl IntoIterator<Item = i32>) {
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn recognises_a_shim_of_this_address_only() {
        let shim = argv(
            "/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id abc -address /tmp/x/c.sock",
        );
        assert!(is_shim_of(&shim, "/tmp/x/c.sock"));
        assert!(!is_shim_of(&shim, "/run/containerd/containerd.sock"));
        let other = argv("/usr/bin/containerd --address /tmp/x/c.sock");
        assert!(!is_shim_of(&other, "/tmp/x/c.sock"));
    }

    #[test]
    fn our_identity_is_alive_and_a_made_up_one_is_not() {
        let me = identity(std::process::id() as i32).unwrap();
        assert!(identity_alive(&me));
        assert!(!identity_alive(&format!("{} 1", std::process::id())));
    }

    #[test]
    fn finds_our_own_parent() {
        let me = std::process::id() as i32;
        assert!(parent(me).is_some());
        assert!(with_descendants(&[parent(me).unwrap()]).contains(&me));
    }
}
