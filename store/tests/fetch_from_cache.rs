//! Fetching real closures from real binary caches (written by `nix copy`, signed by
//! `nix store sign`, served on 127.0.0.1), one per compression.

mod support;

use nixlet_manifest::StorePath;
use nixlet_store::{FetchProgress, FetchSummary, Fetcher, ProgressSnapshot};
use support::cache_server::CacheServer;
use support::nix_fixture::{self, test_options, Cache, Closure, StoreSnapshot};
use support::prereq;

fn store_paths(paths: &[String]) -> Vec<StorePath> {
    paths.iter().map(|p| StorePath::parse(p).unwrap()).collect()
}

/// Builds a closure, caches it with `compression`, deletes it, fetches it back, and checks
/// every path against the original.
async fn round_trip(test: &str, compression: &str, edit: impl FnMut(&str) -> Option<String>) {
    let tag = nix_fixture::unique_tag(test);
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, compression);
    cache.edit_narinfos(edit);
    let server = CacheServer::start(cache.root());
    closure.delete();

    let fetcher = Fetcher::new(vec![cache.substituter(&server.url())], test_options()).unwrap();
    let progress = std::sync::Arc::new(FetchProgress::default());
    let summary = fetcher
        .fetch_closure_with_progress(&closure.roots(), &[], std::sync::Arc::clone(&progress))
        .await
        .unwrap();
    closure.assert_restored();
    assert_summary(&summary, &closure);
    assert_eq!(
        progress.snapshot(),
        ProgressSnapshot {
            paths_to_fetch: closure.paths.len(),
            nar_bytes_to_fetch: summary.nar_bytes,
            paths_done: closure.paths.len(),
            bytes_downloaded: summary.bytes_downloaded,
        }
    );
    for path in &closure.paths {
        // Each NAR was downloaded exactly once.
        let nar = cache.field(path, "URL").unwrap();
        assert_eq!(server.count(&nar), 1, "requests for {nar}");
        nix_fixture::assert_signed_by(path, &cache.key_name);
    }
    StoreSnapshot::assert_no_temporaries(&tag);

    // A second fetch finds everything valid and downloads nothing.
    let again = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    assert_eq!(again.paths_fetched, 0);
    assert_eq!(again.paths_already_valid, closure.paths.len());
    assert_eq!(again.bytes_downloaded, 0);
    assert!(again.by_substituter.is_empty());
    assert_eq!(again.closure, summary.closure);
}

fn assert_summary(summary: &FetchSummary, closure: &Closure) {
    assert_eq!(summary.paths_fetched, closure.paths.len());
    assert_eq!(summary.paths_already_valid, 0);
    assert_eq!(summary.closure, store_paths(&closure.paths));
    assert!(summary.bytes_downloaded > 0);
    // 200 kB of random bytes are in the closure.
    assert!(summary.nar_bytes > 200_000, "{summary:?}");
    // Everything came from the one cache, and its tally adds up to the whole.
    let tallies: Vec<_> = summary.by_substituter.values().collect();
    assert_eq!(tallies.len(), 1, "{summary:?}");
    assert_eq!(tallies[0].paths, summary.paths_fetched);
    assert_eq!(tallies[0].nar_bytes, summary.nar_bytes);
}

#[tokio::test]
async fn fetches_an_xz_closure_byte_identical() {
    if !prereq::ready("fetches_an_xz_closure_byte_identical") {
        return;
    }
    round_trip("xz", "xz", |line| Some(line.to_string())).await;
}

#[tokio::test]
async fn fetches_a_zstd_closure_byte_identical() {
    if !prereq::ready("fetches_a_zstd_closure_byte_identical") {
        return;
    }
    round_trip("zstd", "zstd", |line| Some(line.to_string())).await;
}

#[tokio::test]
async fn fetches_a_gzip_closure_byte_identical() {
    if !prereq::ready("fetches_a_gzip_closure_byte_identical") {
        return;
    }
    round_trip("gzip", "gzip", |line| Some(line.to_string())).await;
}

#[tokio::test]
async fn fetches_an_uncompressed_closure_byte_identical() {
    if !prereq::ready("fetches_an_uncompressed_closure_byte_identical") {
        return;
    }
    round_trip("none", "none", |line| Some(line.to_string())).await;
}

#[tokio::test]
async fn fetches_bzip2_including_narinfos_without_a_compression_line() {
    if !prereq::ready("fetches_bzip2_including_narinfos_without_a_compression_line") {
        return;
    }
    // Compression is not signed, and an absent line means bzip2.
    round_trip("bzip2", "bzip2", |line| {
        (!line.starts_with("Compression:")).then(|| line.to_string())
    })
    .await;
}

#[tokio::test]
async fn an_unregistered_directory_at_the_final_name_is_replaced_not_trusted() {
    if !prereq::ready("an_unregistered_directory_at_the_final_name_is_replaced_not_trusted") {
        return;
    }
    let tag = nix_fixture::unique_tag("unregistered");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "zstd");
    let server = CacheServer::start(cache.root());
    closure.delete();
    // What a crashed in-place writer (Nix 2.8's `nix-store -r`) would leave: a half-written
    // directory under the final name, not registered.
    let lib = closure.path_named("lib");
    std::fs::create_dir_all(format!("{lib}/lib")).unwrap();
    std::fs::write(format!("{lib}/lib/libdemo.txt"), "half").unwrap();

    let fetcher = Fetcher::new(vec![cache.substituter(&server.url())], test_options()).unwrap();
    let summary = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    assert_eq!(summary.paths_fetched, closure.paths.len());
    closure.assert_restored();
}

#[tokio::test]
async fn only_missing_paths_are_fetched() {
    if !prereq::ready("only_missing_paths_are_fetched") {
        return;
    }
    let tag = nix_fixture::unique_tag("partial");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "xz");
    let server = CacheServer::start(cache.root());
    // Only the root and the single-file path go; their dependencies stay valid.
    let root = closure.root.clone();
    let file = closure.path_named("file");
    nix_fixture::delete_paths(&[root.clone(), file.clone()]);

    let fetcher = Fetcher::new(vec![cache.substituter(&server.url())], test_options()).unwrap();
    let summary = fetcher
        .fetch_closure(&store_paths(std::slice::from_ref(&root)))
        .await
        .unwrap();
    assert_eq!(summary.paths_fetched, 2);
    assert_eq!(summary.paths_already_valid, closure.paths.len() - 2);
    assert_eq!(summary.closure, store_paths(&closure.paths));
    closure.assert_restored();
    let lib = closure.path_named("lib");
    assert_eq!(server.count(&cache.field(&lib, "URL").unwrap()), 0);
}
