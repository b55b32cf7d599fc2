//! A closure that is complete on the node needs no cache: the Fetcher answers from the Nix
//! database without a single request, so a cache that accepts connections but never answers (a
//! dead load balancer) cannot hold up a container whose paths are all there. Once a path is
//! missing, the same Fetcher asks the cache as before.

mod support;

use std::time::{Duration, Instant};

use nixlet_store::{already_complete, FetchOptions, Fetcher};
use support::cache_server::{CacheServer, Fault};
use support::nix_fixture::{self, test_options, Cache, Closure};
use support::prereq;

#[tokio::test]
async fn a_complete_closure_asks_no_cache_even_a_stalled_one() {
    if !prereq::ready("a_complete_closure_asks_no_cache_even_a_stalled_one") {
        return;
    }
    let tag = nix_fixture::unique_tag("warm");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "none");
    let server = CacheServer::start(cache.root());
    // Every request would wait far past the timeouts below.
    server.inject("", Fault::Delay(Duration::from_secs(60)), None);
    let options = FetchOptions {
        request_timeout: Duration::from_secs(30),
        read_timeout: Duration::from_secs(30),
        ..test_options()
    };
    let fetcher = Fetcher::new(vec![cache.substituter(&server.url())], options).unwrap();

    let started = Instant::now();
    let summary = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(summary.paths_fetched, 0);
    assert_eq!(summary.paths_already_valid, summary.closure.len());
    assert!(
        summary.closure.len() >= 3,
        "the whole closure: {:?}",
        summary.closure
    );
    assert!(
        server.counts().is_empty(),
        "requests were made: {:?}",
        server.counts()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A missing path: now the same Fetcher asks the cache.
    server.clear_faults();
    closure.delete();
    let summary = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    assert!(summary.paths_fetched > 0);
    assert!(server.count(".narinfo") > 0);
    closure.assert_restored();
}

/// What a shim asks before it builds a Fetcher at all: the whole closure for a complete one,
/// nothing once a path of it is missing.
#[tokio::test]
async fn already_complete_is_the_closure_or_nothing() {
    if !prereq::ready("already_complete_is_the_closure_or_nothing") {
        return;
    }
    let tag = nix_fixture::unique_tag("complete");
    let closure = Closure::build(&tag);
    let nix_db = FetchOptions::default().nix_db;

    let summary = already_complete(&nix_db, &closure.roots())
        .await
        .expect("a closure just built is complete");
    assert_eq!(summary.paths_fetched, 0);
    assert_eq!(summary.paths_already_valid, summary.closure.len());
    assert!(summary.closure.len() >= 3, "{:?}", summary.closure);

    closure.delete();
    assert!(already_complete(&nix_db, &closure.roots()).await.is_none());
}
