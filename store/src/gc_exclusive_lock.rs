//! Nix's GC lock held exclusively, as Nix's own garbage collector holds it: while it is held, no
//! nixlet fetch (which holds it shared for its whole run) and no host Nix GC runs, so GC sees a
//! store that nobody is adding to through nixlet and that nobody else is deleting from.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

#[derive(Debug)]
pub struct ExclusiveGcLock {
    _file: File,
    path: PathBuf,
}

impl ExclusiveGcLock {
    /// Blocks until every shared holder (running fetches, Nix processes registering temporary
    /// roots) is done. `on_wait` runs once if the lock is not free at once, to say why GC waits.
    pub fn acquire(state_dir: &Path, on_wait: impl FnOnce(&Path)) -> io::Result<ExclusiveGcLock> {
        let path = state_dir.join("gc.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                on_wait(&path);
                rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
            }
            Err(errno) => return Err(errno.into()),
        }
        Ok(ExclusiveGcLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waits_for_shared_holders_and_excludes_them() {
        let dir = tempfile::tempdir().unwrap();
        let fetch = crate::GcLock::shared(dir.path()).await.unwrap().unwrap();
        let state_dir = dir.path().to_path_buf();
        let (waited_tx, waited_rx) = std::sync::mpsc::channel();
        let gc = std::thread::spawn(move || {
            ExclusiveGcLock::acquire(&state_dir, |_| waited_tx.send(()).unwrap()).unwrap()
        });
        waited_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!gc.is_finished(), "gc waits while a fetch holds the lock");
        drop(fetch);
        let held = gc.join().unwrap();
        assert_eq!(held.path(), dir.path().join("gc.lock"));
        // A fetch starting now waits for GC.
        let waiting = tokio::time::timeout(
            Duration::from_millis(100),
            crate::GcLock::shared(dir.path()),
        )
        .await;
        assert!(waiting.is_err());
        drop(held);
        assert!(crate::GcLock::shared(dir.path()).await.unwrap().is_some());
    }
}
