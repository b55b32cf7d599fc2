//! Puts the node's filesystem back into the state of a node that did not just delete what the
//! next run writes.
//!
//! Every cold run starts by deleting the previous run's closure (or image): tens of thousands
//! of inodes freed seconds earlier. On an ext4 without a journal (this machine's root
//! filesystem) the inode allocator skips every inode deleted in the last one to ten minutes
//! whose inode-table block is still in the buffer cache (`recently_deleted()` in
//! fs/ext4/ialloc.c), looking each one up: creating N files right after deleting N files is
//! quadratic. Measured here, it was 60% of both `nix-store -r`'s and nixlet's CPU time in
//! cold-fetch, so the benchmark mostly timed the deletion of its own previous run. A real node
//! fetches closures it never had. Syncing and dropping the kernel's caches makes the deleted
//! inodes look long written out; the cache's files are then read back so the binary cache or
//! registry answers from memory, as a remote server with a warm cache would, for both sides.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::nix_cli;

/// Syncs, drops the page, dentry and inode caches, then re-reads every file below `warm`.
pub fn settle_after_delete(warm: &[&Path]) -> Result<()> {
    nix_cli::run(&mut Command::new("sync"))?;
    fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("cannot drop the kernel's caches (/proc/sys/vm/drop_caches)")?;
    for dir in warm {
        read_tree(dir).with_context(|| format!("cannot read {} back", dir.display()))?;
    }
    Ok(())
}

fn read_tree(path: &Path) -> io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    if metadata.is_dir() {
        for entry in fs::read_dir(path)? {
            read_tree(&entry?.path())?;
        }
    } else if metadata.is_file() {
        io::copy(&mut fs::File::open(path)?, &mut io::sink())?;
    }
    Ok(())
}
