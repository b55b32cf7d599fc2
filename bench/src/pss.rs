//! Proportional set size of processes (`/proc/PID/smaps_rollup`): memory shared between shims
//! (the same binary's text) is divided among them, so a sum over shims is what they really cost.

use std::collections::BTreeMap;
use std::fs;

use nixlet_e2e::procs;

/// PSS of one process in KiB; `None` if it is gone or the kernel lacks smaps_rollup.
pub fn pss_kib(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Per shim binary name (`containerd-shim-runc-v2`, …): how many processes serve the
/// containerd at `address` and their total PSS in KiB.
pub fn shims_by_binary(address: &str) -> BTreeMap<String, (usize, u64)> {
    let mut found: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for pid in procs::shims_of(address) {
        let Some(argv) = procs::cmdline(pid) else {
            continue;
        };
        let name = argv[0].rsplit('/').next().unwrap_or_default().to_owned();
        let Some(pss) = pss_kib(pid) else { continue };
        let entry = found.entry(name).or_default();
        entry.0 += 1;
        entry.1 += pss;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_pss() {
        if std::path::Path::new("/proc/self/smaps_rollup").exists() {
            assert!(pss_kib(std::process::id() as i32).unwrap() > 0);
        }
    }
}
