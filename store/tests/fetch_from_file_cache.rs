//! A `file://` binary cache read by nixlet itself: the directory `nix copy --to file://…`
//! wrote, named by its URL, with no HTTP server in between. The same checks as over HTTP hold
//! (every compression byte-identical; a tampered, foreign-signed or incomplete cache refused
//! with the path, the substituter and the cause named, the store unchanged), and a local read
//! that fails is reported at once, without retries.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nixlet_manifest::StorePath;
use nixlet_store::{FetchError, FetchOptions, Fetcher, SubstituterConfig};
use support::nix_fixture::{self, nix, test_options, Cache, Closure, StoreSnapshot};
use support::prereq;

/// `file://` and the directory, percent-encoded as a URL must be.
fn file_url(dir: &Path) -> String {
    reqwest::Url::from_file_path(dir)
        .expect("an absolute path")
        .to_string()
}

/// A closure in a cache directory, deleted from the store.
struct Scenario {
    closure: Closure,
    cache: Cache,
    before: StoreSnapshot,
}

impl Scenario {
    fn new(test: &str, compression: &str) -> Scenario {
        let tag = nix_fixture::unique_tag(test);
        let closure = Closure::build(&tag);
        let cache = Cache::create(&closure.root, &tag, compression);
        closure.delete();
        let before = StoreSnapshot::take(&tag);
        Scenario {
            closure,
            cache,
            before,
        }
    }

    fn url(&self) -> String {
        file_url(&self.cache.root())
    }

    fn substituter(&self) -> SubstituterConfig {
        self.cache.substituter(&self.url())
    }

    async fn fetch_with(
        &self,
        substituter: SubstituterConfig,
        options: FetchOptions,
    ) -> Result<nixlet_store::FetchSummary, FetchError> {
        Fetcher::new(vec![substituter], options)
            .unwrap()
            .fetch_closure(&self.closure.roots())
            .await
    }

    /// Fetches, expects an error naming `path`, the substituter and `cause`, and checks that
    /// the store did not change.
    async fn expect_failure(&self, path: &str, cause: &str) -> String {
        let message = self
            .fetch_with(self.substituter(), test_options())
            .await
            .expect_err("the fetch must fail")
            .to_string();
        assert!(message.contains(path), "names the path {path}: {message}");
        assert!(
            message.contains(&format!("from {}: ", self.url())),
            "names the substituter: {message}"
        );
        assert!(message.contains(cause), "says {cause:?}: {message}");
        self.assert_unchanged();
        message
    }

    fn assert_unchanged(&self) {
        assert_eq!(StoreSnapshot::take(&self.closure.tag), self.before);
    }

    fn nar_file(&self, path: &str) -> PathBuf {
        self.cache.nar_file(path)
    }
}

/// Caches the closure with `compression`, fetches it back from the directory, and checks every
/// path against the original (`nix-store --verify-path`, `--dump` hash, references, canonical
/// metadata) and that its signature was kept.
async fn round_trip(test: &str, compression: &str) {
    let s = Scenario::new(test, compression);
    let fetcher = Fetcher::new(vec![s.substituter()], test_options()).unwrap();
    let summary = fetcher.fetch_closure(&s.closure.roots()).await.unwrap();
    s.closure.assert_restored();
    assert_eq!(summary.paths_fetched, s.closure.paths.len());
    assert_eq!(summary.paths_already_valid, 0);
    // Bytes read from the cache count as downloaded: they are what the progress bar shows.
    let nar_files: u64 = s
        .closure
        .paths
        .iter()
        .map(|p| std::fs::metadata(s.nar_file(p)).unwrap().len())
        .sum();
    assert_eq!(summary.bytes_downloaded, nar_files, "{summary:?}");
    assert_eq!(summary.by_substituter.len(), 1, "{summary:?}");
    assert_eq!(
        summary.by_substituter[&s.url()].paths,
        s.closure.paths.len()
    );
    for path in &s.closure.paths {
        nix_fixture::assert_signed_by(path, &s.cache.key_name);
    }
    StoreSnapshot::assert_no_temporaries(&s.closure.tag);
    let again = fetcher.fetch_closure(&s.closure.roots()).await.unwrap();
    assert_eq!(again.paths_fetched, 0);
    assert_eq!(again.bytes_downloaded, 0);
}

#[tokio::test]
async fn fetches_an_xz_closure_from_a_directory_byte_identical() {
    if !prereq::ready("fetches_an_xz_closure_from_a_directory_byte_identical") {
        return;
    }
    round_trip("filexz", "xz").await;
}

#[tokio::test]
async fn fetches_a_zstd_closure_from_a_directory_byte_identical() {
    if !prereq::ready("fetches_a_zstd_closure_from_a_directory_byte_identical") {
        return;
    }
    round_trip("filezstd", "zstd").await;
}

#[tokio::test]
async fn fetches_a_bzip2_closure_from_a_directory_byte_identical() {
    if !prereq::ready("fetches_a_bzip2_closure_from_a_directory_byte_identical") {
        return;
    }
    round_trip("filebzip2", "bzip2").await;
}

#[tokio::test]
async fn fetches_a_gzip_closure_from_a_directory_byte_identical() {
    if !prereq::ready("fetches_a_gzip_closure_from_a_directory_byte_identical") {
        return;
    }
    round_trip("filegzip", "gzip").await;
}

#[tokio::test]
async fn fetches_an_uncompressed_closure_from_a_directory_byte_identical() {
    if !prereq::ready("fetches_an_uncompressed_closure_from_a_directory_byte_identical") {
        return;
    }
    round_trip("filenone", "none").await;
}

#[tokio::test]
async fn a_directory_whose_name_needs_percent_encoding_is_read() {
    if !prereq::ready("a_directory_whose_name_needs_percent_encoding_is_read") {
        return;
    }
    let s = Scenario::new("filespace", "zstd");
    // Where an operator's sync job might put it: a name with a space and a non-ASCII letter.
    let moved = s.cache.dir.path().join("nix cache é");
    std::fs::rename(s.cache.root(), &moved).unwrap();
    let url = file_url(&moved);
    assert!(url.contains("nix%20cache%20%C3%A9"), "{url}");
    s.fetch_with(s.cache.substituter(&url), test_options())
        .await
        .unwrap();
    s.closure.assert_restored();
}

#[tokio::test]
async fn a_tampered_nar_file_is_refused() {
    if !prereq::ready("a_tampered_nar_file_is_refused") {
        return;
    }
    let s = Scenario::new("filetamper", "none");
    // One byte of a file's contents: still a valid NAR of the same size, with another hash.
    let lib = s.closure.path_named("lib");
    let nar_file = s.nar_file(&lib);
    let mut nar = std::fs::read(&nar_file).unwrap();
    let text = format!("library {}", s.closure.tag);
    let at = nar
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .expect("the file contents are in the nar");
    nar[at] = b'L';
    std::fs::write(&nar_file, nar).unwrap();
    s.expect_failure(&lib, "nar hash mismatch: narinfo says sha256:")
        .await;
}

#[tokio::test]
async fn a_cache_signed_by_another_key_is_refused() {
    if !prereq::ready("a_cache_signed_by_another_key_is_refused") {
        return;
    }
    let s = Scenario::new("filekey", "xz");
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = (keys.path().join("sk"), keys.path().join("pk"));
    nix(&[
        "nix-store",
        "--generate-binary-cache-key",
        "nixlet-fetch-other-1",
        secret.to_str().unwrap(),
        public.to_str().unwrap(),
    ]);
    let mut substituter = s.substituter();
    substituter.trusted_keys = vec![std::fs::read_to_string(public).unwrap().trim().to_string()];
    let message = s
        .fetch_with(substituter, test_options())
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains(&s.closure.root), "{message}");
    assert!(message.contains(&s.url()), "{message}");
    assert!(
        message.contains(&format!(
            "narinfo is signed only by untrusted keys ({}); trusted keys: nixlet-fetch-other-1",
            s.cache.key_name
        )),
        "{message}"
    );
    s.assert_unchanged();
}

#[tokio::test]
async fn a_missing_nar_file_is_an_error_not_an_absence() {
    if !prereq::ready("a_missing_nar_file_is_an_error_not_an_absence") {
        return;
    }
    let s = Scenario::new("filenonar", "xz");
    let lib = s.closure.path_named("lib");
    let nar_file = s.nar_file(&lib);
    std::fs::remove_file(&nar_file).unwrap();
    s.expect_failure(
        &lib,
        &format!(
            "cannot open {}: No such file or directory (os error 2)",
            nar_file.display()
        ),
    )
    .await;

    // A directory where the NAR should be: unreadable as a NAR, named as such.
    std::fs::create_dir(&nar_file).unwrap();
    s.expect_failure(
        &lib,
        &format!("cannot open {}: not a regular file", nar_file.display()),
    )
    .await;
}

#[tokio::test]
async fn a_bad_local_read_fails_at_once_without_retries() {
    if !prereq::ready("a_bad_local_read_fails_at_once_without_retries") {
        return;
    }
    let s = Scenario::new("filetrunc", "xz");
    let lib = s.closure.path_named("lib");
    let nar_file = s.nar_file(&lib);
    let whole = std::fs::read(&nar_file).unwrap();
    std::fs::write(&nar_file, &whole[..whole.len() / 2]).unwrap();
    // Over HTTP a truncated body is retried with backoff; a local file would only be read the
    // same way again, so a long backoff must never be waited for.
    let options = FetchOptions {
        attempts: 3,
        retry_backoff: Duration::from_secs(60),
        ..test_options()
    };
    let started = Instant::now();
    let message = s
        .fetch_with(s.substituter(), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(30), "{message}");
    assert!(message.contains(&lib), "{message}");
    assert!(
        message.contains(&format!(
            "cannot decompress xz nar from {}: ",
            nar_file.display()
        )),
        "{message}"
    );
    assert!(!message.contains("gave up after"), "{message}");
    s.assert_unchanged();
}

#[tokio::test]
async fn a_nar_url_leaving_the_cache_directory_is_refused() {
    if !prereq::ready("a_nar_url_leaving_the_cache_directory_is_refused") {
        return;
    }
    let s = Scenario::new("fileescape", "none");
    // The URL line is not signed: whoever can write a narinfo could point it anywhere on the
    // node. Put a genuine NAR outside the cache and point the narinfo at it.
    let lib = s.closure.path_named("lib");
    let outside = s.cache.dir.path().join("outside.nar");
    std::fs::copy(s.nar_file(&lib), &outside).unwrap();
    let narinfo = s.cache.narinfo_file(&lib);
    let text = std::fs::read_to_string(&narinfo).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("URL: ") {
                "URL: ../outside.nar".to_string()
            } else {
                line.to_string()
            }
        })
        .collect();
    std::fs::write(&narinfo, edited.join("\n") + "\n").unwrap();
    s.expect_failure(
        &lib,
        "nar url \"../outside.nar\" is not a file inside the cache directory",
    )
    .await;
}

#[tokio::test]
async fn a_directory_that_is_not_a_cache_and_a_path_it_lacks_are_told_apart() {
    if !prereq::ready("a_directory_that_is_not_a_cache_and_a_path_it_lacks_are_told_apart") {
        return;
    }
    let s = Scenario::new("filenotfound", "xz");
    // A path the cache does not have: no narinfo file, as a 404 over HTTP.
    let missing = format!(
        "/nix/store/{}-nixlet-fetch-{}-missing",
        "0".repeat(32),
        s.closure.tag
    );
    let error = Fetcher::new(vec![s.substituter()], test_options())
        .unwrap()
        .fetch_closure(&[StorePath::parse(&missing).unwrap()])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "store path {missing} is not in any substituter (asked {})",
            s.url()
        )
    );

    // A directory without nix-cache-info (an NFS export that is not mounted looks like this):
    // an error naming the file, not "not in this cache".
    let empty = tempfile::tempdir().unwrap();
    let url = file_url(empty.path());
    let message = s
        .fetch_with(s.cache.substituter(&url), test_options())
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains(&s.closure.root), "{message}");
    assert!(
        message.contains(&format!(
            "from {url}: cannot open {}: No such file or directory (os error 2)",
            empty.path().join("nix-cache-info").display()
        )),
        "{message}"
    );
    s.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fetches_at_once_install_each_path_once() {
    if !prereq::ready("two_fetches_at_once_install_each_path_once") {
        return;
    }
    let s = Scenario::new("fileboth", "xz");
    let first = Fetcher::new(vec![s.substituter()], test_options()).unwrap();
    let second = Fetcher::new(vec![s.substituter()], test_options()).unwrap();
    let roots = s.closure.roots();
    // Nix's per-path locks are flocks on separate open files: they exclude each other within
    // one process as between two shims.
    let (a, b) = tokio::join!(first.fetch_closure(&roots), second.fetch_closure(&roots));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.paths_fetched + b.paths_fetched,
        s.closure.paths.len(),
        "{a:?} {b:?}"
    );
    s.closure.assert_restored();
}
