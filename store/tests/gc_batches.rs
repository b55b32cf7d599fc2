//! `nixlet gc` deletes in batches, each under its own hold of Nix's exclusive GC lock and planned
//! anew, so a Create waiting for the lock waits for one batch, not for the whole collection.

mod support;

use std::time::Duration;

use nixlet_manifest::StorePath;
use nixlet_store::{collect_garbage, install_record, GcOptions};
use support::nix_fixture::{self, is_registered, Closure};
use support::prereq;

#[test]
fn gc_deletes_in_batches_each_planned_under_the_lock() {
    if !prereq::ready("gc_deletes_in_batches_each_planned_under_the_lock") {
        return;
    }
    let tag = nix_fixture::unique_tag("gcbatch");
    let closure = Closure::build(&tag);
    let paths: Vec<StorePath> = closure
        .paths
        .iter()
        .map(|path| StorePath::parse(path).unwrap())
        .collect();
    assert!(paths.len() >= 3, "a closure of several paths: {paths:?}");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("installed-paths.sqlite");
    for path in &paths {
        install_record::note_installed(&record, path, "test").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("gcroots")).unwrap();
    let options = GcOptions {
        nix_db: "/nix/var/nix/db/db.sqlite".into(),
        nix_state_dir: "/nix/var/nix".into(),
        gcroots_dir: dir.path().join("gcroots"),
        install_record: record,
        trees_dir: None,
        max_store_bytes: None,
        min_free_bytes: None,
        grace: Duration::ZERO,
        dry_run: false,
        batch_paths: 1,
    };

    let report = collect_garbage(&options).unwrap();
    let mut deleted: Vec<_> = report.deleted.iter().map(|v| v.path.clone()).collect();
    deleted.sort();
    let mut expected = paths.clone();
    expected.sort();
    assert_eq!(deleted, expected, "skipped: {:?}", report.skipped);
    // One path per batch, then one that finds nothing left to delete.
    assert_eq!(report.batches, paths.len() + 1);
    assert_eq!(
        report.freed_bytes,
        report.deleted.iter().map(|v| v.nar_size).sum::<u64>()
    );
    for path in &paths {
        assert!(
            !is_registered(&path.to_string()),
            "{path} is still registered"
        );
        assert!(!path.to_path_buf().exists(), "{path} is still on disk");
    }
}
