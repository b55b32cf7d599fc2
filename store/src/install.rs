//! Putting an unpacked path in place so that nobody ever sees half of it.
//!
//! A path is unpacked into `/nix/store/.nixlet-<base>` (same filesystem, so the final step is a
//! rename) and moved to `/nix/store/<base>` with `renameat2(RENAME_NOREPLACE)`. The temporary
//! name is derived from the path, and only the holder of the path's lock touches it: a fetch
//! killed mid-download leaves a temporary entry that the next holder of the lock (or
//! [`sweep_stale_entries`]) removes.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nixlet_manifest::StorePath;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

use crate::fetch_error::LocalError;
use crate::path_lock::PathLock;

/// Prefix of nixlet's temporary entries in the store. Nix's own names start with a hash, so
/// these can never be taken for a store path.
pub const TEMP_PREFIX: &str = ".nixlet-";

/// The store directory, opened once so every operation is relative to the same directory.
#[derive(Debug)]
pub struct StoreDir {
    path: PathBuf,
    dir: File,
}

impl StoreDir {
    pub fn open(path: impl Into<PathBuf>) -> Result<StoreDir, LocalError> {
        let path = path.into();
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| LocalError::io("open store directory", &path, e.into()))?;
        Ok(StoreDir {
            path,
            dir: File::from(fd),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> &File {
        &self.dir
    }

    /// Whether anything (file, directory, symlink, even dangling) is at `name`.
    pub fn exists(&self, name: &OsStr) -> Result<bool, LocalError> {
        match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(LocalError::io("stat", self.path.join(name), e.into())),
        }
    }

    /// Removes whatever is at `name`, a whole tree if it is a directory; nothing there is fine.
    pub fn remove(&self, name: &OsStr) -> Result<(), LocalError> {
        remove_at(&self.dir, name).map_err(|e| LocalError::io("remove", self.path.join(name), e))
    }
}

pub fn temp_name(path: &StorePath) -> String {
    format!("{TEMP_PREFIX}{}", path.base_name())
}

/// A temporary entry for `path` that is removed when dropped, unless it was installed.
#[derive(Debug)]
pub struct TempEntry {
    store: Arc<StoreDir>,
    name: String,
    installed: bool,
}

impl TempEntry {
    /// Claims the temporary name of `path`, removing what a killed fetch left there. Only call
    /// with the path's lock held: the lock is what makes the leftover dead.
    pub fn claim(
        store: &Arc<StoreDir>,
        path: &StorePath,
        _held: &PathLock,
    ) -> Result<TempEntry, LocalError> {
        let name = temp_name(path);
        if store.exists(OsStr::new(&name))? {
            tracing::info!(path = %path, "removing the leftover of an interrupted fetch");
            store.remove(OsStr::new(&name))?;
        }
        Ok(TempEntry {
            store: Arc::clone(store),
            name,
            installed: false,
        })
    }

    pub fn name(&self) -> &OsStr {
        OsStr::new(&self.name)
    }

    pub fn store(&self) -> &StoreDir {
        &self.store
    }

    pub fn store_handle(&self) -> Arc<StoreDir> {
        Arc::clone(&self.store)
    }

    pub fn full_path(&self) -> PathBuf {
        self.store.path.join(&self.name)
    }

    /// Removes what an attempt left, so the next attempt starts clean.
    pub fn clear(&self) -> Result<(), LocalError> {
        self.store.remove(self.name())
    }

    /// Moves the entry to `path`'s final name. Whatever is already there must have been found
    /// unregistered by the caller (under the path lock): it is replaced, never trusted.
    pub fn install(mut self, path: &StorePath) -> Result<(), LocalError> {
        let store = Arc::clone(&self.store);
        let store = &*store;
        let final_name = OsStr::new(path.base_name());
        let full = store.path.join(final_name);
        match rename(store, self.name(), final_name, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                tracing::warn!(path = %path, "replacing an unregistered entry at the final name");
                // Swap atomically, so the name never disappears or shows a mix, then delete
                // what was there (now under the temporary name).
                match rename(store, self.name(), final_name, RenameFlags::EXCHANGE) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::INVAL) => {
                        // A filesystem without RENAME_EXCHANGE: remove, then move.
                        store.remove(final_name)?;
                        rename(store, self.name(), final_name, RenameFlags::NOREPLACE)
                            .map_err(|e| LocalError::io("rename into", &full, e.into()))?;
                    }
                    Err(e) => return Err(LocalError::io("exchange into", &full, e.into())),
                }
                store.remove(self.name())?;
            }
            Err(e) => return Err(LocalError::io("rename into", &full, e.into())),
        }
        self.installed = true;
        Ok(())
    }
}

impl Drop for TempEntry {
    fn drop(&mut self) {
        if !self.installed {
            if let Err(error) = self.store.remove(self.name()) {
                tracing::warn!(%error, "cannot remove temporary store entry");
            }
        }
    }
}

fn rename(
    store: &StoreDir,
    from: &OsStr,
    to: &OsStr,
    flags: RenameFlags,
) -> Result<(), rustix::io::Errno> {
    match rustix::fs::renameat_with(&store.dir, from, &store.dir, to, flags) {
        // Filesystems without RENAME_NOREPLACE: the path lock already excludes every other
        // writer of this name, so check-then-rename is as good here.
        Err(rustix::io::Errno::INVAL) if flags == RenameFlags::NOREPLACE => {
            match rustix::fs::statat(&store.dir, to, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(_) => Err(rustix::io::Errno::EXIST),
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::renameat(&store.dir, from, &store.dir, to)
                }
                Err(e) => Err(e),
            }
        }
        other => other,
    }
}

/// Removes `name` in `parent`, recursively, never following symlinks. Store directories are
/// 0555, so each is made writable before its entries are removed (root does not need it; a
/// test or a rootless setup does).
fn remove_at(parent: &File, name: &OsStr) -> io::Result<()> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dir = File::from(fd);
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
        let mut children = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let child = entry.file_name().to_bytes();
            if child != b"." && child != b".." {
                children.push(child.to_vec());
            }
        }
        for child in children {
            remove_at(&dir, OsStr::from_bytes(&child))?;
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Removes what killed fetches left in `store_dir`: temporary entries and lock files that no
/// live process holds. Safe to run at any time, alongside running fetches and Nix: an entry is
/// only touched while holding its path lock, by Nix's own protocol. Returns how many entries
/// were removed.
pub fn sweep_stale_entries(store_dir: &Path) -> Result<usize, LocalError> {
    let store = StoreDir::open(store_dir)?;
    let mut removed = 0;
    let read_error = |e: io::Error| LocalError::io("read", store_dir, e);
    let names: Vec<String> = std::fs::read_dir(store_dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    for name in names {
        if let Some(base) = name.strip_prefix(TEMP_PREFIX) {
            let Ok(path) = StorePath::from_base_name(base) else {
                continue;
            };
            let lock_path = crate::path_lock::lock_path(store_dir, &path);
            let Some(lock) = PathLock::try_acquire_at(&lock_path)
                .map_err(|e| LocalError::io("lock", &lock_path, e))?
            else {
                continue;
            };
            store.remove(OsStr::new(&name))?;
            drop(lock);
            removed += 1;
        } else if let Some(base) = name.strip_suffix(".lock") {
            if StorePath::from_base_name(base).is_err() {
                continue;
            }
            // Gone already (its temporary entry was swept just before): do not recreate it.
            if !store.exists(OsStr::new(&name))? {
                continue;
            }
            // Taking and releasing a free lock deletes its file, exactly as its last holder
            // should have.
            let lock_path = store_dir.join(&name);
            if let Some(lock) = PathLock::try_acquire_at(&lock_path)
                .map_err(|e| LocalError::io("lock", &lock_path, e))?
            {
                drop(lock);
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn path() -> StorePath {
        StorePath::parse("/nix/store/00000000000000000000000000000000-thing").unwrap()
    }

    fn read_only_tree(at: &Path) {
        std::fs::create_dir_all(at.join("sub")).unwrap();
        std::fs::write(at.join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink("/", at.join("sub/root")).unwrap();
        for p in [at.join("sub"), at.to_path_buf()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }

    #[tokio::test]
    async fn installs_by_rename_and_removes_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(StoreDir::open(tmp.path()).unwrap());
        let lock = PathLock::acquire(tmp.path(), &path()).await.unwrap();
        {
            let entry = TempEntry::claim(&store, &path(), &lock).unwrap();
            read_only_tree(&entry.full_path());
        }
        assert!(
            !tmp.path().join(temp_name(&path())).exists(),
            "dropped entries vanish"
        );

        let entry = TempEntry::claim(&store, &path(), &lock).unwrap();
        read_only_tree(&entry.full_path());
        entry.install(&path()).unwrap();
        assert!(tmp
            .path()
            .join(path().base_name())
            .join("sub/file")
            .exists());
        assert!(!tmp.path().join(temp_name(&path())).exists());
    }

    #[tokio::test]
    async fn an_unregistered_entry_at_the_final_name_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(StoreDir::open(tmp.path()).unwrap());
        let lock = PathLock::acquire(tmp.path(), &path()).await.unwrap();
        let stale = tmp.path().join(path().base_name());
        read_only_tree(&stale);
        std::fs::write(tmp.path().join("canary"), "").unwrap();

        let entry = TempEntry::claim(&store, &path(), &lock).unwrap();
        std::fs::create_dir(entry.full_path()).unwrap();
        std::fs::write(entry.full_path().join("new"), "y").unwrap();
        entry.install(&path()).unwrap();
        assert!(stale.join("new").exists());
        assert!(!stale.join("sub").exists());
        assert!(!tmp.path().join(temp_name(&path())).exists());
        // The symlink to / in the stale tree was removed, not followed.
        assert!(tmp.path().join("canary").exists());
    }

    #[tokio::test]
    async fn claim_removes_a_leftover_and_sweep_removes_only_unlocked_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let leftover = tmp.path().join(temp_name(&path()));
        read_only_tree(&leftover);
        // A lock file left by a killed process (its flock died with it).
        std::fs::write(crate::path_lock::lock_path(tmp.path(), &path()), "").unwrap();

        let other = StorePath::parse("/nix/store/11111111111111111111111111111111-busy").unwrap();
        let busy = PathLock::acquire(tmp.path(), &other).await.unwrap();
        read_only_tree(&tmp.path().join(temp_name(&other)));

        assert_eq!(sweep_stale_entries(tmp.path()).unwrap(), 1);
        assert!(!leftover.exists());
        assert!(!crate::path_lock::lock_path(tmp.path(), &path()).exists());
        assert!(
            tmp.path().join(temp_name(&other)).exists(),
            "a held path is left alone"
        );
        drop(busy);
        assert_eq!(sweep_stale_entries(tmp.path()).unwrap(), 1);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
