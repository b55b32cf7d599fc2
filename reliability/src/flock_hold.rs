//! Holding a store tree's build lock (`<trees_dir>/.<hash>.lock`, an exclusive flock), as a
//! concurrent Create building the same tree does: a Create that reached its store tree waits
//! for it, which is how the suite catches a shim just before it rewrites the spec. Whether a
//! process waits on a flock is read from `/proc/locks`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

pub struct FlockHold {
    _lock: Flock<File>,
}

impl FlockHold {
    pub fn exclusive(path: &Path) -> Result<FlockHold> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(FlockHold { _lock: lock })
    }
}

/// Whether process `pid` waits for a flock (a `->` line of `/proc/locks`).
pub fn waits_for_flock(pid: i32) -> bool {
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"->")
            && fields.get(2) == Some(&"FLOCK")
            && fields.get(5) == Some(&pid.to_string().as_str())
    })
}
