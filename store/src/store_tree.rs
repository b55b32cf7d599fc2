//! Per-environment store trees: one directory per environment holding exactly its closure, so a
//! container gets a single read-only bind mount on `/nix/store` instead of one per store path.
//!
//! Why: runc performs each bind mount separately (mount, read-only remount, and mountinfo scans
//! that grow with the mount table), which measured about 0.7 ms per path, seconds for a closure
//! of a few thousand paths. One mount of a directory costs the same whatever the closure size.
//!
//! Why a hard-link farm: the tree must live outside `/nix/store` (Nix's GC deletes any entry of
//! the store it does not know) and hold the closure's files without copying them. Directories are
//! recreated with the store's mode and mtime, symlinks recreated with the same target, regular
//! files hard-linked to the store's inodes. Sharing inodes is safe because canonical store files
//! are read-only, root-owned and never modified in place (Nix's own `optimise` hard-links them
//! into `.links` for the same reason), and the container sees the tree only through a read-only
//! mount. A tree therefore costs directory inodes (and symlink inodes), not file data; data is
//! freed only when its last link goes. It keeps the files alive even if the store path is
//! collected meanwhile, so a container never sees its closure change under it.
//!
//! Layout, below the trees directory (default `/nix/var/nixlet/trees`, on the store's filesystem,
//! since hard links cannot cross filesystems):
//! - `<hash>/`: the complete tree of the environment view `/nix/store/<hash>-nixlet-env-…`. The
//!   view's hash identifies the closure: the view references the environment's outputs and
//!   carries the SBOM of the whole closure, so two closures never share a view.
//! - `.<hash>.lock`: flock held by the builder, so concurrent Creates of one environment build it
//!   once and the others wait and reuse it.
//! - `.<hash>.tmp/`: the tree being built; renamed to `<hash>` when complete, so only complete
//!   trees ever appear under a final name. A leftover (a killed builder) is removed by the next
//!   builder of that hash (which holds the lock, so the leftover is dead) or by `nixlet gc`.
//!
//! Lifetime: a tree is in use while a GC root points to its view (every container nixlet rewrote
//! holds one); `nixlet gc` removes the others under Nix's exclusive GC lock, which builders hold
//! shared from the tree check until the container's root exists (`tree_sweep.rs`).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nixlet_manifest::{StorePath, STORE_DIR};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, Timestamps};

pub const DEFAULT_TREES_DIR: &str = "/nix/var/nixlet/trees";

/// Suffix of a tree being built and of a builder's lock file (both also start with a dot, so
/// they never look like a tree, whose name is a bare hash).
pub const TEMP_SUFFIX: &str = ".tmp";
pub const LOCK_SUFFIX: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Hard links cannot reach the store from the trees directory (another filesystem or another
    /// mount of it): the caller falls back to one mount per store path.
    #[error(
        "cannot hard-link {} into {}: the trees directory is not on the store's filesystem \
         (or not on the same mount)",
        source_path.display(),
        trees_dir.display()
    )]
    CrossDevice {
        source_path: PathBuf,
        trees_dir: PathBuf,
    },
    #[error("store tree: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store tree: {} is neither a file, a directory nor a symlink", path.display())]
    Unsupported { path: PathBuf },
}

impl TreeError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> TreeError {
        TreeError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// What [`StoreTrees::ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeOutcome {
    pub path: PathBuf,
    /// Whether this call built the tree (false: it was there, or another builder made it).
    pub built: bool,
    /// Files hard-linked / copied (copies only where a file hit the filesystem's link limit).
    pub linked_files: u64,
    pub copied_files: u64,
    pub elapsed: Duration,
}

/// The trees directory of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreTrees {
    dir: PathBuf,
    store_dir: PathBuf,
}

impl StoreTrees {
    pub fn new(dir: impl Into<PathBuf>) -> StoreTrees {
        StoreTrees::with_store_dir(dir, STORE_DIR)
    }

    /// Trees of the store at `store_dir` (tests use a scratch store).
    pub fn with_store_dir(dir: impl Into<PathBuf>, store_dir: impl Into<PathBuf>) -> StoreTrees {
        StoreTrees {
            dir: dir.into(),
            store_dir: store_dir.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the tree of `view` is (whether it exists or not).
    pub fn tree_path(&self, view: &StorePath) -> PathBuf {
        self.dir.join(view.hash_part())
    }

    /// The tree of `view` if it is complete: one `stat`, no walk (the warm-start path).
    pub fn existing(&self, view: &StorePath) -> Option<PathBuf> {
        let path = self.tree_path(view);
        let stat = rustix::fs::lstat(&path).ok()?;
        (FileType::from_raw_mode(stat.st_mode) == FileType::Directory).then_some(path)
    }

    /// The tree of `view` holding exactly `closure`, built unless it exists. Blocking.
    ///
    /// The caller must hold Nix's GC lock shared (or otherwise keep `nixlet gc` away) from this
    /// call until a GC root protects `view`, or the sweep may remove the tree in between.
    pub fn ensure(
        &self,
        view: &StorePath,
        closure: &[StorePath],
    ) -> Result<TreeOutcome, TreeError> {
        let started = Instant::now();
        let reused = |path| TreeOutcome {
            path,
            built: false,
            linked_files: 0,
            copied_files: 0,
            elapsed: started.elapsed(),
        };
        if let Some(path) = self.existing(view) {
            return Ok(reused(path));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| TreeError::io("create trees directory", &self.dir, e))?;
        let trees = open_dir(&self.dir)?;
        let hash = view.hash_part();
        let _lock = lock_tree(&trees, &self.dir, hash)?;
        // Built by another builder while this one waited for the lock.
        if let Some(path) = self.existing(view) {
            return Ok(reused(path));
        }
        let temp = format!(".{hash}{TEMP_SUFFIX}");
        // We hold the lock, so whoever left this is dead.
        let leftover = remove_tree_at(&trees, OsStr::new(&temp))
            .map_err(|e| TreeError::io("remove leftover", self.dir.join(&temp), e))?;
        if leftover.is_some() {
            tracing::info!(tree = %self.dir.join(&temp).display(), "removed the leftover of an interrupted tree build");
        }
        let mut builder = Builder {
            trees_dir: &self.dir,
            linked: 0,
            copied: 0,
        };
        let built = builder.build(&trees, &temp, &self.store_dir, closure);
        if let Err(error) = built {
            let _ = remove_tree_at(&trees, OsStr::new(&temp));
            return Err(error);
        }
        let path = self.tree_path(view);
        rustix::fs::renameat_with(&trees, temp.as_str(), &trees, hash, RenameFlags::NOREPLACE)
            .map_err(|e| TreeError::io("rename into place", &path, e))?;
        let outcome = TreeOutcome {
            path,
            built: true,
            linked_files: builder.linked,
            copied_files: builder.copied,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            tree = %outcome.path.display(),
            view = %view,
            paths = closure.len(),
            linked_files = outcome.linked_files,
            copied_files = outcome.copied_files,
            elapsed_ms = outcome.elapsed.as_millis() as u64,
            "built store tree"
        );
        Ok(outcome)
    }
}

/// The builder's exclusive flock on `.<hash>.lock`, released on drop. The file stays: deleting
/// it safely would need the dance `path_lock.rs` does; `nixlet gc` removes it with the tree.
fn lock_tree(trees: &File, trees_dir: &Path, hash: &str) -> Result<File, TreeError> {
    let name = format!(".{hash}{LOCK_SUFFIX}");
    let fd = rustix::fs::openat(
        trees,
        name.as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| TreeError::io("open lock", trees_dir.join(&name), e))?;
    let file = File::from(fd);
    rustix::fs::flock(&file, FlockOperation::LockExclusive)
        .map_err(|e| TreeError::io("lock", trees_dir.join(&name), e))?;
    Ok(file)
}

struct Builder<'a> {
    trees_dir: &'a Path,
    linked: u64,
    copied: u64,
}

impl Builder<'_> {
    fn build(
        &mut self,
        trees: &File,
        temp: &str,
        store_dir: &Path,
        closure: &[StorePath],
    ) -> Result<(), TreeError> {
        let temp_path = self.trees_dir.join(temp);
        rustix::fs::mkdirat(trees, temp, Mode::from_raw_mode(0o700))
            .map_err(|e| TreeError::io("create", &temp_path, e))?;
        let root = open_dir_at(trees, OsStr::new(temp), &temp_path)?;
        let store = open_dir(store_dir)?;
        for path in closure {
            let name = OsStr::new(path.base_name());
            self.entry(&store, &store_dir.join(name), &root, name)?;
        }
        // What the container sees as /nix/store: read-only like a store directory.
        rustix::fs::fchmod(&root, Mode::from_raw_mode(0o555))
            .map_err(|e| TreeError::io("chmod", &temp_path, e))
    }

    /// Recreates `name` of `from` (at `source`) in `to`, never following a symlink.
    fn entry(
        &mut self,
        from: &File,
        source: &Path,
        to: &File,
        name: &OsStr,
    ) -> Result<(), TreeError> {
        let stat = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| TreeError::io("stat", source, e))?;
        let times = Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: stat.st_atime as _,
                tv_nsec: stat.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: stat.st_mtime as _,
                tv_nsec: stat.st_mtime_nsec as _,
            },
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => self.file(from, source, to, name, stat.st_mode, &times),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name, Vec::new())
                    .map_err(|e| TreeError::io("read link", source, e))?;
                rustix::fs::symlinkat(target.as_c_str(), to, name)
                    .map_err(|e| TreeError::io("create symlink for", source, e))?;
                rustix::fs::utimensat(to, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| TreeError::io("set times of symlink for", source, e))
            }
            FileType::Directory => {
                // Writable while it is filled; the store's mode once complete.
                rustix::fs::mkdirat(to, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| TreeError::io("create directory for", source, e))?;
                let source_dir = open_dir_at(from, name, source)?;
                let target_dir = open_dir_at(to, name, source)?;
                for child in read_names(&source_dir, source)? {
                    let child = OsStr::from_bytes(&child);
                    self.entry(&source_dir, &source.join(child), &target_dir, child)?;
                }
                rustix::fs::fchmod(&target_dir, Mode::from_raw_mode(stat.st_mode & 0o7777))
                    .map_err(|e| TreeError::io("chmod directory for", source, e))?;
                rustix::fs::futimens(&target_dir, &times)
                    .map_err(|e| TreeError::io("set times of directory for", source, e))
            }
            _ => Err(TreeError::Unsupported {
                path: source.to_path_buf(),
            }),
        }
    }

    fn file(
        &mut self,
        from: &File,
        source: &Path,
        to: &File,
        name: &OsStr,
        mode: u32,
        times: &Timestamps,
    ) -> Result<(), TreeError> {
        match rustix::fs::linkat(from, name, to, name, AtFlags::empty()) {
            Ok(()) => {
                self.linked += 1;
                Ok(())
            }
            Err(rustix::io::Errno::XDEV) => Err(TreeError::CrossDevice {
                source_path: source.to_path_buf(),
                trees_dir: self.trees_dir.to_path_buf(),
            }),
            // The inode has as many links as the filesystem allows (65000 on ext4; popular
            // files after `nix-store --optimise`). One copy of this file costs its bytes once;
            // falling back to per-path mounts would cost every container of the environment.
            Err(rustix::io::Errno::MLINK) => {
                copy_file(from, source, to, name, mode, times)?;
                self.copied += 1;
                tracing::debug!(file = %source.display(), "link limit reached; copied");
                Ok(())
            }
            Err(e) => Err(TreeError::io("hard-link", source, e)),
        }
    }
}

fn copy_file(
    from: &File,
    source: &Path,
    to: &File,
    name: &OsStr,
    mode: u32,
    times: &Timestamps,
) -> Result<(), TreeError> {
    let mut input = File::from(
        rustix::fs::openat(
            from,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| TreeError::io("open", source, e))?,
    );
    let mut output = File::from(
        rustix::fs::openat(
            to,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| TreeError::io("create copy of", source, e))?,
    );
    io::copy(&mut input, &mut output).map_err(|e| TreeError::io("copy", source, e))?;
    rustix::fs::fchmod(&output, Mode::from_raw_mode(mode & 0o7777))
        .map_err(|e| TreeError::io("chmod copy of", source, e))?;
    rustix::fs::futimens(&output, times)
        .map_err(|e| TreeError::io("set times of copy of", source, e))
}

pub(crate) fn open_dir(path: &Path) -> Result<File, TreeError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| TreeError::io("open directory", path, e))
}

fn open_dir_at(parent: &File, name: &OsStr, shown: &Path) -> Result<File, TreeError> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| TreeError::io("open directory", shown, e))
}

fn read_names(dir: &File, shown: &Path) -> Result<Vec<Vec<u8>>, TreeError> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(|e| TreeError::io("read", shown, e))? {
        let entry = entry.map_err(|e| TreeError::io("read", shown, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

/// What removing a tree gave back to the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freed {
    /// Allocated bytes of the inodes whose last link went: the tree's directories and symlinks,
    /// files copied at the link limit, and files whose store path was deleted meanwhile. A file
    /// still linked from the store frees nothing.
    pub bytes: u64,
    pub entries: u64,
}

/// Removes `name` in `parent` recursively (never following symlinks), counting what it frees;
/// `None` when nothing was there. With `dry_run`, only counts.
pub(crate) fn remove_tree_at(parent: &File, name: &OsStr) -> io::Result<Option<Freed>> {
    let mut freed = Freed::default();
    match walk_remove(parent, name, &mut freed, false) {
        Ok(()) => Ok(Some(freed)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && freed.entries == 0 => Ok(None),
        Err(e) => Err(e),
    }
}

/// What removing `name` in `parent` would free, removing nothing.
pub(crate) fn measure_tree_at(parent: &File, name: &OsStr) -> io::Result<Freed> {
    let mut freed = Freed::default();
    walk_remove(parent, name, &mut freed, true)?;
    Ok(freed)
}

fn walk_remove(parent: &File, name: &OsStr, freed: &mut Freed, dry_run: bool) -> io::Result<()> {
    let stat = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    freed.entries += 1;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let dir = File::from(rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
        if !dry_run {
            // Tree directories are 0555 like the store's: root does not need this, others do.
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
        }
        let mut children = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let child = entry.file_name().to_bytes();
            if child != b"." && child != b".." {
                children.push(child.to_vec());
            }
        }
        for child in children {
            walk_remove(&dir, OsStr::from_bytes(&child), freed, dry_run)?;
        }
        freed.bytes += stat.st_blocks as u64 * 512;
        if !dry_run {
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
        }
    } else {
        // Counted before the unlink: the last link is the one being removed.
        if stat.st_nlink <= 1 {
            freed.bytes += stat.st_blocks as u64 * 512;
        }
        if !dry_run {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const A: &str = "00000000000000000000000000000000-a";
    const B: &str = "11111111111111111111111111111111-b";
    const VIEW: &str = "/nix/store/22222222222222222222222222222222-nixlet-env-acme-web";

    /// A scratch store with a directory path and a single-file path, canonical modes.
    fn scratch_store(dir: &Path) -> Vec<StorePath> {
        let a = dir.join(A);
        std::fs::create_dir_all(a.join("bin")).unwrap();
        std::fs::write(a.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(a.join("bin/tool"), PermissionsExt::from_mode(0o555)).unwrap();
        std::os::unix::fs::symlink("bin/tool", a.join("link")).unwrap();
        std::fs::write(dir.join(B), "single file").unwrap();
        std::fs::set_permissions(dir.join(B), PermissionsExt::from_mode(0o444)).unwrap();
        for d in [a.join("bin"), a.clone()] {
            std::fs::set_permissions(&d, PermissionsExt::from_mode(0o555)).unwrap();
        }
        [A, B]
            .map(|b| StorePath::from_base_name(b).unwrap())
            .to_vec()
    }

    #[test]
    fn builds_links_and_reuses_a_tree_of_a_scratch_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let closure = scratch_store(&store);
        let trees = StoreTrees::with_store_dir(dir.path().join("trees"), &store);
        let view = StorePath::parse(VIEW).unwrap();

        let built = trees.ensure(&view, &closure).unwrap();
        assert!(built.built);
        assert_eq!(built.linked_files, 2);
        let tree = &built.path;
        let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            inode(&tree.join(A).join("bin/tool")),
            inode(&store.join(A).join("bin/tool"))
        );
        assert_eq!(inode(&tree.join(B)), inode(&store.join(B)));
        assert_eq!(
            std::fs::read_link(tree.join(A).join("link")).unwrap(),
            Path::new("bin/tool")
        );
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&tree.join(A)), 0o555);
        assert_eq!(mode(tree), 0o555);
        assert!(!trees.ensure(&view, &closure).unwrap().built);

        // Removing the tree frees its directories, not the files the store still links.
        let parent = open_dir(trees.dir()).unwrap();
        let freed = remove_tree_at(&parent, OsStr::new(view.hash_part()))
            .unwrap()
            .unwrap();
        assert_eq!(freed.entries, 6);
        let directories = 3 * std::fs::metadata(&store).unwrap().blocks() * 512;
        assert_eq!(freed.bytes, directories);
        assert!(store.join(A).join("bin/tool").exists());
        assert_eq!(
            remove_tree_at(&parent, OsStr::new(view.hash_part())).unwrap(),
            None
        );
    }

    #[test]
    fn a_missing_store_path_fails_the_build_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let trees = StoreTrees::with_store_dir(dir.path().join("trees"), &store);
        let view = StorePath::parse(VIEW).unwrap();
        let error = trees
            .ensure(&view, &[StorePath::from_base_name(A).unwrap()])
            .unwrap_err();
        assert!(error.to_string().contains(A), "{error}");
        let left: Vec<_> = std::fs::read_dir(trees.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().ends_with(LOCK_SUFFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
