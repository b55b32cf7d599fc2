//! Store trees on real store paths built by Nix: the tree holds exactly the closure (the same
//! NAR serialisation per path, modes, mtimes, and the store's own inodes for files), concurrent
//! builders make one tree, a complete tree is reused, a trees directory on another filesystem
//! is reported as such (the shim then mounts per path), and `nixlet gc`'s sweep removes what no
//! root points to.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use nixlet_manifest::StorePath;
use nixlet_store::store_tree::{StoreTrees, TreeError};
use nixlet_store::tree_sweep::sweep_trees;
use support::nix_fixture::{dump_hash, unique_tag, Closure};
use support::prereq;

/// A scratch trees directory on the store's filesystem (hard links need it).
fn trees_dir() -> tempfile::TempDir {
    std::fs::create_dir_all("/nix/var/nixlet").unwrap();
    tempfile::Builder::new()
        .prefix("test-trees-")
        .tempdir_in("/nix/var/nixlet")
        .unwrap()
}

fn store_paths(closure: &Closure) -> Vec<StorePath> {
    closure
        .paths
        .iter()
        .map(|p| StorePath::parse(p).unwrap())
        .collect()
}

/// The tree's key: any store path stands in for the environment view here.
fn view(closure: &Closure) -> StorePath {
    StorePath::parse(&closure.root).unwrap()
}

/// (type, mode, mtime, inode for files, symlink target) of one entry.
type EntryFacts = (String, u32, i64, Option<u64>, Option<PathBuf>);

/// Every entry below `root`, by path relative to it.
fn metadata_of(root: &Path) -> BTreeMap<PathBuf, EntryFacts> {
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        // `join` of an empty path would add a trailing slash, wrong for a single-file path.
        let path = if relative.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&relative)
        };
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(relative.join(entry.unwrap().file_name()));
            }
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            "symlink"
        };
        out.insert(
            relative,
            (
                kind.to_string(),
                meta.mode() & 0o7777,
                meta.mtime(),
                meta.is_file().then_some(meta.ino()),
                meta.file_type()
                    .is_symlink()
                    .then(|| std::fs::read_link(&path).unwrap()),
            ),
        );
    }
    out
}

#[test]
fn the_tree_holds_exactly_the_closure_and_is_reused() {
    if !prereq::ready("the_tree_holds_exactly_the_closure_and_is_reused") {
        return;
    }
    let closure = Closure::build(&unique_tag("tree-content"));
    let dir = trees_dir();
    let trees = StoreTrees::new(dir.path());
    let view = view(&closure);
    assert_eq!(trees.existing(&view), None);

    let built = trees.ensure(&view, &store_paths(&closure)).unwrap();
    assert!(built.built);
    assert_eq!(built.path, dir.path().join(view.hash_part()));
    assert_eq!(built.copied_files, 0);
    assert!(built.linked_files > 0);

    let names: BTreeSet<String> = std::fs::read_dir(&built.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let expected: BTreeSet<String> = closure
        .paths
        .iter()
        .map(|p| p.trim_start_matches("/nix/store/").to_string())
        .collect();
    assert_eq!(names, expected, "the tree holds exactly the closure");
    for path in &closure.paths {
        let in_tree = built.path.join(path.trim_start_matches("/nix/store/"));
        // The same NAR: structure, bytes, executable bits, symlink targets.
        assert_eq!(
            dump_hash(in_tree.to_str().unwrap()),
            closure.dump_hashes[path],
            "contents of {path} in the tree"
        );
        // The same modes and mtimes, and files are the store's own inodes.
        assert_eq!(
            metadata_of(&in_tree),
            metadata_of(Path::new(path)),
            "metadata of {path} in the tree"
        );
    }
    let root = std::fs::metadata(&built.path).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o555, "the tree is read-only");

    // Reused: no rebuild, the same directory.
    let again = trees.ensure(&view, &store_paths(&closure)).unwrap();
    assert!(!again.built);
    assert_eq!(again.path, built.path);
    assert_eq!(std::fs::metadata(&again.path).unwrap().ino(), root.ino());
    assert_eq!(trees.existing(&view), Some(built.path.clone()));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_builders_make_one_tree() {
    if !prereq::ready("concurrent_builders_make_one_tree") {
        return;
    }
    let closure = Closure::build(&unique_tag("tree-race"));
    let dir = trees_dir();
    let (view, paths) = (view(&closure), store_paths(&closure));
    let barrier = Arc::new(Barrier::new(4));
    let builders: Vec<_> = (0..4)
        .map(|_| {
            let (trees, view, paths, barrier) = (
                StoreTrees::new(dir.path()),
                view.clone(),
                paths.clone(),
                Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                barrier.wait();
                trees.ensure(&view, &paths).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<_> = builders.into_iter().map(|b| b.join().unwrap()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| o.built).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.iter().all(|o| o.path == outcomes[0].path));
    let mut entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec![
            format!(".{}.lock", view.hash_part()),
            view.hash_part().to_string()
        ]
    );
}

#[test]
fn a_leftover_of_a_killed_builder_is_replaced() {
    if !prereq::ready("a_leftover_of_a_killed_builder_is_replaced") {
        return;
    }
    let closure = Closure::build(&unique_tag("tree-leftover"));
    let dir = trees_dir();
    let view = view(&closure);
    let leftover = dir.path().join(format!(".{}.tmp", view.hash_part()));
    std::fs::create_dir_all(leftover.join("half/built")).unwrap();
    std::fs::write(leftover.join("half/built/file"), "x").unwrap();
    let built = StoreTrees::new(dir.path())
        .ensure(&view, &store_paths(&closure))
        .unwrap();
    assert!(built.built);
    assert!(!leftover.exists());
    assert!(!built.path.join("half").exists());
}

#[test]
fn another_filesystem_is_reported_so_the_shim_can_mount_per_path() {
    if !prereq::ready("another_filesystem_is_reported_so_the_shim_can_mount_per_path") {
        return;
    }
    let shm = Path::new("/dev/shm");
    if !shm.is_dir()
        || std::fs::metadata(shm).unwrap().dev() == std::fs::metadata("/nix/store").unwrap().dev()
    {
        eprintln!("skipping: no tmpfs at /dev/shm");
        return;
    }
    let closure = Closure::build(&unique_tag("tree-exdev"));
    let dir = tempfile::tempdir_in(shm).unwrap();
    let view = view(&closure);
    let error = StoreTrees::new(dir.path())
        .ensure(&view, &store_paths(&closure))
        .unwrap_err();
    assert!(matches!(error, TreeError::CrossDevice { .. }), "{error}");
    assert!(
        error.to_string().contains("not on the store's filesystem"),
        "{error}"
    );
    // Nothing half-built stays, and no tree appears.
    let entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn the_sweep_removes_unrooted_trees_and_counts_only_last_links() {
    if !prereq::ready("the_sweep_removes_unrooted_trees_and_counts_only_last_links") {
        return;
    }
    let kept = Closure::build(&unique_tag("tree-kept"));
    let gone = Closure::build(&unique_tag("tree-gone"));
    let dir = trees_dir();
    let trees = StoreTrees::new(dir.path());
    let kept_tree = trees.ensure(&view(&kept), &store_paths(&kept)).unwrap();
    let gone_tree = trees.ensure(&view(&gone), &store_paths(&gone)).unwrap();
    // A builder killed half-way.
    std::fs::create_dir(dir.path().join(".0123.tmp")).unwrap();
    let roots = BTreeSet::from([view(&kept)]);

    let dry = sweep_trees(dir.path(), &roots, true).unwrap();
    assert_eq!(dry.removed.len(), 1);
    assert_eq!(dry.removed[0].path, gone_tree.path);
    assert!(gone_tree.path.exists(), "a dry run removes nothing");

    let swept = sweep_trees(dir.path(), &roots, false).unwrap();
    assert_eq!(swept.kept, 1);
    assert_eq!(swept.leftovers, 1);
    assert_eq!(swept.removed.len(), 1);
    assert!(!gone_tree.path.exists());
    assert!(kept_tree.path.exists());
    // The files are still the store's: only the tree's directories (and symlinks) were freed,
    // far less than the closure's data (200 kB of random bytes in `lib`).
    assert_eq!(swept.removed[0].freed_bytes, dry.removed[0].freed_bytes);
    assert!(swept.removed[0].freed_bytes > 0);
    assert!(swept.removed[0].freed_bytes < 100_000, "{swept:?}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let hash = view(&kept).hash_part().to_string();
    assert_eq!(left, vec![format!(".{hash}.lock"), hash]);

    // With its store paths gone, the tree holds the last links: removing it frees the data.
    let tree = trees.ensure(&view(&gone), &store_paths(&gone)).unwrap();
    assert!(tree.built);
    gone.delete();
    let swept = sweep_trees(dir.path(), &roots, false).unwrap();
    assert!(swept.freed_bytes >= 200_000, "{swept:?}");
}
