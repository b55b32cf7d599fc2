//! The Nix CLI as a substituter backend: a `file://` cache configured with `backend = "nix-cli"`
//! is fetched by `nix-store --realise`, and a cache that never answers is given up on at the
//! timeout with the whole process group killed.

mod support;

use std::time::{Duration, Instant};

use nixlet_manifest::StorePath;
use nixlet_store::install_record::InstallRecord;
use nixlet_store::{FetchOptions, Fetcher, SubstituterBackend, SubstituterConfig};
use support::cache_server::{CacheServer, Fault};
use support::nix_fixture::{self, test_options, Cache, Closure, StoreSnapshot};
use support::prereq;
use support::processes::processes_mentioning;

fn nix_cli(url: String, key: &str, timeout_secs: u64) -> SubstituterConfig {
    SubstituterConfig {
        url,
        trusted_keys: vec![key.to_string()],
        backend: SubstituterBackend::NixCli,
        timeout_secs: Some(timeout_secs),
        ..SubstituterConfig::default()
    }
}

#[tokio::test]
async fn a_file_cache_is_fetched_through_nix_store_and_recorded() {
    if !prereq::ready("a_file_cache_is_fetched_through_nix_store_and_recorded") {
        return;
    }
    let tag = nix_fixture::unique_tag("nixcli");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "xz");
    closure.delete();
    let state = tempfile::tempdir().unwrap();
    let record_file = state.path().join("installed-paths.sqlite");
    let url = format!("file://{}", cache.root().display());

    let fetcher = Fetcher::new(
        vec![nix_cli(url.clone(), &cache.public_key, 120)],
        FetchOptions {
            install_record: Some(record_file.clone()),
            ..test_options()
        },
    )
    .unwrap();
    let summary = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    closure.assert_restored();
    assert_eq!(summary.paths_fetched, closure.paths.len());
    assert_eq!(summary.paths_already_valid, 0);
    let recorded = InstallRecord::open(&record_file).unwrap().all().unwrap();
    assert_eq!(
        recorded
            .iter()
            .map(|r| r.path.to_string())
            .collect::<Vec<_>>(),
        closure.paths
    );
    assert!(recorded
        .iter()
        .all(|r| r.origin == format!("nix-cli {url}")));

    // A cache whose key is not trusted is refused by Nix, and the error says both tries.
    closure.delete();
    let wrong_key = "other-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let before = StoreSnapshot::take(&tag);
    let refused = Fetcher::new(vec![nix_cli(url, wrong_key, 120)], test_options())
        .unwrap()
        .fetch_closure(&closure.roots())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(&format!(
            "store path {} is not in any substituter (asked none configured)",
            closure.root
        )),
        "{refused}"
    );
    assert!(
        refused.contains("the nix cli fallback failed too: file://"),
        "{refused}"
    );
    assert!(
        refused.contains("`nix-store --realise` failed"),
        "{refused}"
    );
    assert_eq!(StoreSnapshot::take(&tag).rows, before.rows);
}

#[tokio::test]
async fn a_hanging_nix_store_is_killed_with_its_process_group_at_the_timeout() {
    if !prereq::ready("a_hanging_nix_store_is_killed_with_its_process_group_at_the_timeout") {
        return;
    }
    let tag = nix_fixture::unique_tag("nixclihang");
    // A cache that accepts connections and never answers: Nix would wait for minutes.
    let dir = tempfile::tempdir().unwrap();
    let server = CacheServer::start(dir.path().to_path_buf());
    server.inject("/", Fault::Delay(Duration::from_secs(600)), None);
    let missing = StorePath::parse(&format!("/nix/store/{}-{tag}", "1".repeat(32))).unwrap();
    let key = "hang-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

    let fetcher = Fetcher::new(vec![nix_cli(server.url(), key, 2)], test_options()).unwrap();
    let started = Instant::now();
    let error = fetcher
        .fetch_closure(std::slice::from_ref(&missing))
        .await
        .unwrap_err()
        .to_string();
    let elapsed = started.elapsed();
    assert!(
        error.contains("`nix-store --realise` timed out after 2s; its process group was killed"),
        "{error}"
    );
    assert!(error.contains(&server.url()), "{error}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert!(server.count("nix-cache-info") >= 1, "nix asked the cache");
    assert_eq!(processes_mentioning(&tag), Vec::<String>::new());
    assert!(nix_fixture::store_entries_like(&tag).is_empty());
}
