//! Nix's locks, taken the way Nix 2.8 takes them, so nixlet and host Nix exclude each other.
//!
//! - Per-path lock: `flock(LOCK_EX)` on `/nix/store/<base>.lock`. The holder that is done
//!   unlinks the file and then writes one byte into it (the "delete token"); anyone who was
//!   waiting on the old file sees a non-empty file once it gets the lock, knows the file is gone
//!   from the directory, and starts over with a fresh one (Nix's `PathLocks::lockPaths`).
//! - GC lock: a shared `flock` on `/nix/var/nix/gc.lock` keeps Nix's garbage collector (which
//!   takes it exclusively and deletes every store entry it does not know) away from temporary
//!   directories and from paths not yet registered or rooted.
//!
//! Waiting polls with `LOCK_NB` rather than blocking a thread: a fetch that its caller gives up
//! on then stops waiting at once instead of leaving a thread that would take the lock later.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nixlet_manifest::StorePath;
use rustix::fs::FlockOperation;

const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(200);

/// An exclusive hold on one store path, as Nix's `PathLocks` with deletion enabled.
#[derive(Debug)]
pub struct PathLock {
    file: File,
    lock_path: PathBuf,
}

/// `<store_dir>/<base>.lock`.
pub fn lock_path(store_dir: &Path, path: &StorePath) -> PathBuf {
    store_dir.join(format!("{}.lock", path.base_name()))
}

impl PathLock {
    /// Waits until this process holds the lock of `path`.
    pub async fn acquire(store_dir: &Path, path: &StorePath) -> io::Result<PathLock> {
        let lock_path = lock_path(store_dir, path);
        let mut delay = FIRST_POLL;
        let mut logged = false;
        loop {
            if let Some(lock) = PathLock::try_acquire_at(&lock_path)? {
                return Ok(lock);
            }
            if !logged {
                tracing::info!(path = %path, "waiting for another process fetching this path");
                logged = true;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
    }

    /// Takes the lock at `lock_path` if nobody holds it.
    pub fn try_acquire_at(lock_path: &Path) -> io::Result<Option<PathLock>> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(lock_path)?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(errno) => return Err(errno.into()),
            }
            // A delete token: the previous holder unlinked this file after we opened it, so a
            // newcomer may already hold a fresh file under the same name. Start over.
            if file.metadata()?.len() != 0 {
                continue;
            }
            return Ok(Some(PathLock {
                file,
                lock_path: lock_path.to_path_buf(),
            }));
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        // Order as in Nix's `deleteLockFile`: unlink first, then mark the open file, so a waiter
        // that gets the lock after we close sees the token and does not trust a dead file.
        if let Err(error) = std::fs::remove_file(&self.lock_path) {
            tracing::debug!(lock = %self.lock_path.display(), %error, "cannot remove path lock");
        }
        if let Err(error) = self.file.write_all(b"d") {
            tracing::debug!(lock = %self.lock_path.display(), %error, "cannot write delete token");
        }
        // Closing `file` releases the flock.
    }
}

/// A shared hold on Nix's GC lock. `None` from [`GcLock::shared`] means the node has no Nix
/// state directory, so there is no Nix garbage collector to keep away.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl GcLock {
    pub async fn shared(state_dir: &Path) -> io::Result<Option<GcLock>> {
        if !state_dir.is_dir() {
            return Ok(None);
        }
        let path = state_dir.join("gc.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        let mut delay = FIRST_POLL;
        let mut logged = false;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
                Ok(()) => return Ok(Some(GcLock { _file: file })),
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(errno) => return Err(errno.into()),
            }
            if !logged {
                tracing::info!(lock = %path.display(), "waiting for the nix garbage collector");
                logged = true;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> StorePath {
        StorePath::parse("/nix/store/00000000000000000000000000000000-locked").unwrap()
    }

    #[tokio::test]
    async fn a_second_holder_waits_and_the_lock_file_is_deleted_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = PathLock::acquire(dir.path(), &path()).await.unwrap();
        let lock_file = lock_path(dir.path(), &path());
        assert!(lock_file.exists());
        assert!(PathLock::try_acquire_at(&lock_file).unwrap().is_none());

        let store_dir = dir.path().to_path_buf();
        let waiter = tokio::spawn(async move { PathLock::acquire(&store_dir, &path()).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        // The waiter started over on a fresh, empty file, not the deleted one.
        assert!(lock_file.exists());
        assert_eq!(std::fs::metadata(&lock_file).unwrap().len(), 0);
        drop(second);
        assert!(!lock_file.exists());
    }

    #[test]
    fn release_unlinks_the_file_and_leaves_a_delete_token_for_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let lock_file = lock_path(dir.path(), &path());
        let held = PathLock::try_acquire_at(&lock_file).unwrap().unwrap();
        // A waiter that opened the file before the release, as a blocked Nix would have.
        let waiter = File::open(&lock_file).unwrap();
        drop(held);
        assert!(!lock_file.exists());
        // What the waiter checks once its flock succeeds: the file is marked dead.
        assert_eq!(waiter.metadata().unwrap().len(), 1);
        assert!(PathLock::try_acquire_at(&lock_file).unwrap().is_some());
    }

    #[tokio::test]
    async fn gc_lock_is_shared_between_holders_and_absent_without_nix() {
        let dir = tempfile::tempdir().unwrap();
        let a = GcLock::shared(dir.path()).await.unwrap().unwrap();
        let b = GcLock::shared(dir.path()).await.unwrap().unwrap();
        let exclusive = File::open(dir.path().join("gc.lock")).unwrap();
        assert_eq!(
            rustix::fs::flock(&exclusive, FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop((a, b));
        rustix::fs::flock(&exclusive, FlockOperation::NonBlockingLockExclusive).unwrap();
        assert!(GcLock::shared(&dir.path().join("missing"))
            .await
            .unwrap()
            .is_none());
    }
}
