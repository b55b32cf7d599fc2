//! Every failure of a fetch is an error that names the path, the substituter and the cause,
//! and leaves the store exactly as it was: no new entry in /nix/store (path, temporary entry or
//! lock file) and no database row.

mod support;

use std::time::Duration;

use base64::Engine as _;
use nixlet_manifest::StorePath;
use nixlet_store::{FetchError, FetchOptions, Fetcher, SubstituterConfig};
use sha2::{Digest, Sha256};
use support::cache_server::{CacheServer, Fault};
use support::nix_fixture::{self, nix, test_options, Cache, Closure, StoreSnapshot};
use support::prereq;

/// A closure in a cache on 127.0.0.1, deleted from the store.
struct Scenario {
    closure: Closure,
    cache: Cache,
    server: CacheServer,
    before: StoreSnapshot,
}

impl Scenario {
    fn new(test: &str, compression: &str) -> Scenario {
        Scenario::with_edit(test, compression, |line| Some(line.to_string()))
    }

    fn with_edit(
        test: &str,
        compression: &str,
        edit: impl FnMut(&str) -> Option<String>,
    ) -> Scenario {
        let tag = nix_fixture::unique_tag(test);
        let closure = Closure::build(&tag);
        let cache = Cache::create(&closure.root, &tag, compression);
        cache.edit_narinfos(edit);
        let server = CacheServer::start(cache.root());
        closure.delete();
        let before = StoreSnapshot::take(&tag);
        Scenario {
            closure,
            cache,
            server,
            before,
        }
    }

    fn substituter(&self) -> SubstituterConfig {
        self.cache.substituter(&self.server.url())
    }

    async fn fetch(&self, options: FetchOptions) -> Result<nixlet_store::FetchSummary, FetchError> {
        Fetcher::new(vec![self.substituter()], options)
            .unwrap()
            .fetch_closure(&self.closure.roots())
            .await
    }

    /// Fetches, expects an error, checks it names `path`, the substituter and `cause`, and that
    /// the store did not change.
    async fn expect_failure(&self, options: FetchOptions, path: &str, cause: &str) -> FetchError {
        let error = self.fetch(options).await.expect_err("the fetch must fail");
        let message = error.to_string();
        assert!(message.contains(path), "names the path {path}: {message}");
        assert!(
            message.contains(&self.server.url()),
            "names the substituter: {message}"
        );
        assert!(message.contains(cause), "says {cause:?}: {message}");
        self.assert_unchanged();
        error
    }

    fn assert_unchanged(&self) {
        assert_eq!(StoreSnapshot::take(&self.closure.tag), self.before);
    }

    fn nar_url(&self, path: &str) -> String {
        self.cache.field(path, "URL").unwrap()
    }
}

fn generate_key(name: &str, dir: &std::path::Path) -> String {
    let (secret, public) = (dir.join("sk"), dir.join("pk"));
    nix(&[
        "nix-store",
        "--generate-binary-cache-key",
        name,
        secret.to_str().unwrap(),
        public.to_str().unwrap(),
    ]);
    std::fs::read_to_string(public).unwrap().trim().to_string()
}

#[tokio::test]
async fn a_narinfo_signed_by_an_untrusted_key_is_refused() {
    if !prereq::ready("a_narinfo_signed_by_an_untrusted_key_is_refused") {
        return;
    }
    let s = Scenario::new("wrongkey", "xz");
    let dir = tempfile::tempdir().unwrap();
    let mut substituter = s.substituter();
    substituter.trusted_keys = vec![generate_key("nixlet-fetch-other-1", dir.path())];
    let error = Fetcher::new(vec![substituter], test_options())
        .unwrap()
        .fetch_closure(&s.closure.roots())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&s.closure.root), "{message}");
    assert!(
        message.contains(&format!(
            "narinfo is signed only by untrusted keys ({}); trusted keys: nixlet-fetch-other-1",
            s.cache.key_name
        )),
        "{message}"
    );
    s.assert_unchanged();

    // Another key under the trusted key's name: the signature does not verify.
    let impostor = tempfile::tempdir().unwrap();
    let mut substituter = s.substituter();
    substituter.trusted_keys = vec![generate_key(&s.cache.key_name, impostor.path())];
    let error = Fetcher::new(vec![substituter], test_options())
        .unwrap()
        .fetch_closure(&s.closure.roots())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(&format!(
            "signature by trusted key {} does not verify",
            s.cache.key_name
        )),
        "{error}"
    );
    s.assert_unchanged();
}

#[tokio::test]
async fn unsigned_paths_are_refused() {
    if !prereq::ready("unsigned_paths_are_refused") {
        return;
    }
    let s = Scenario::with_edit("unsigned", "zstd", |line| {
        (!line.starts_with("Sig:")).then(|| line.to_string())
    });
    s.expect_failure(
        test_options(),
        &s.closure.root,
        "narinfo has no signature, and signatures are required",
    )
    .await;
    // Without required signatures an input-addressed path still has nothing to vouch for it.
    let options = FetchOptions {
        require_signatures: false,
        ..test_options()
    };
    s.expect_failure(
        options,
        &s.closure.root,
        "narinfo has no trusted signature and no content address",
    )
    .await;
}

#[tokio::test]
async fn a_signed_field_changed_after_signing_is_detected() {
    if !prereq::ready("a_signed_field_changed_after_signing_is_detected") {
        return;
    }
    // Drop a reference of the root (the only narinfo naming both file and link): an attacker
    // hiding a dependency.
    let s = Scenario::with_edit("tampered", "xz", |line| {
        Some(
            if line.starts_with("References:") && line.contains("-file") && line.contains("-link") {
                line.split_whitespace()
                    .filter(|word| !word.contains("-file"))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                line.to_string()
            },
        )
    });
    s.expect_failure(test_options(), &s.closure.root, "does not verify")
        .await;
}

#[tokio::test]
async fn a_nar_that_does_not_match_its_signed_hash_is_refused() {
    if !prereq::ready("a_nar_that_does_not_match_its_signed_hash_is_refused") {
        return;
    }
    let s = Scenario::new("narhash", "none");
    // Flip one byte of a file's contents: still a valid NAR of the same size.
    let lib = s.closure.path_named("lib");
    let nar_file = s.cache.nar_file(&lib);
    let mut nar = std::fs::read(&nar_file).unwrap();
    let text = format!("library {}", s.closure.tag);
    let at = nar
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .expect("the file contents are in the nar");
    nar[at] = b'L';
    std::fs::write(&nar_file, nar).unwrap();
    s.expect_failure(
        test_options(),
        &lib,
        "nar hash mismatch: narinfo says sha256:",
    )
    .await;
}

#[tokio::test]
async fn a_nar_longer_than_its_signed_size_is_refused() {
    if !prereq::ready("a_nar_longer_than_its_signed_size_is_refused") {
        return;
    }
    let s = Scenario::new("narsize", "none");
    let lib = s.closure.path_named("lib");
    let mut body = std::fs::read(s.cache.nar_file(&lib)).unwrap();
    body.extend_from_slice(&[0; 4096]);
    s.server.inject(&s.nar_url(&lib), Fault::Body(body), None);
    let error = s
        .expect_failure(test_options(), &lib, "nar size mismatch: narinfo says")
        .await;
    assert!(
        error.to_string().contains("the download has more than"),
        "{error}"
    );
}

#[tokio::test]
async fn a_narinfo_for_another_path_is_refused() {
    if !prereq::ready("a_narinfo_for_another_path_is_refused") {
        return;
    }
    let s = Scenario::new("otherpath", "xz");
    let lib = s.closure.path_named("lib");
    let app = s.closure.path_named("app");
    // The cache answers for lib with app's genuine, validly signed narinfo.
    let hash = &lib["/nix/store/".len().."/nix/store/".len() + 32];
    s.server.inject(
        &format!("{hash}.narinfo"),
        Fault::Body(s.cache.narinfo(&app).into_bytes()),
        None,
    );
    s.expect_failure(
        test_options(),
        &lib,
        &format!("narinfo describes {app}, not the path asked for"),
    )
    .await;
}

#[tokio::test]
async fn a_path_in_no_cache_is_reported_as_such() {
    if !prereq::ready("a_path_in_no_cache_is_reported_as_such") {
        return;
    }
    let s = Scenario::new("notfound", "xz");
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
            s.server.url()
        )
    );
    s.assert_unchanged();
}

#[tokio::test]
async fn http_errors_are_retried_with_backoff_then_reported() {
    if !prereq::ready("http_errors_are_retried_with_backoff_then_reported") {
        return;
    }
    let s = Scenario::new("http500", "xz");
    let root_hash = &s.closure.root["/nix/store/".len().."/nix/store/".len() + 32];
    s.server
        .inject(&format!("{root_hash}.narinfo"), Fault::Status(500), None);
    s.expect_failure(
        test_options(),
        &s.closure.root,
        "answered http 500 (gave up after 3 attempts)",
    )
    .await;
    assert_eq!(s.server.count(&format!("{root_hash}.narinfo")), 3);

    // A cache that recovers within the attempts is as good as one that never failed.
    s.server.clear_faults();
    let lib = s.closure.path_named("lib");
    s.server
        .inject(&s.nar_url(&lib), Fault::Status(503), Some(2));
    s.fetch(test_options()).await.unwrap();
    assert_eq!(s.server.count(&s.nar_url(&lib)), 3);
    s.closure.assert_restored();
}

#[tokio::test]
async fn a_truncated_download_is_retried_then_reported() {
    if !prereq::ready("a_truncated_download_is_retried_then_reported") {
        return;
    }
    let s = Scenario::new("truncated", "xz");
    let lib = s.closure.path_named("lib");
    let nar = s.nar_url(&lib);
    s.server.inject(&nar, Fault::Truncate, None);
    s.expect_failure(test_options(), &lib, "(gave up after 3 attempts)")
        .await;
    assert_eq!(s.server.count(&nar), 3);

    // Truncated once, then whole: the retry starts from a clean temporary entry.
    s.server.clear_faults();
    s.server.inject(&nar, Fault::Truncate, Some(1));
    s.fetch(test_options()).await.unwrap();
    assert_eq!(s.server.count(&nar), 5);
    s.closure.assert_restored();
}

#[tokio::test]
async fn a_refused_connection_is_reported() {
    if !prereq::ready("a_refused_connection_is_reported") {
        return;
    }
    let s = Scenario::new("refused", "xz");
    // A port nobody listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let error = Fetcher::new(vec![s.cache.substituter(&url)], test_options())
        .unwrap()
        .fetch_closure(&s.closure.roots())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&s.closure.root), "{message}");
    assert!(
        message.contains(&format!("from {url}: cannot connect to {url}/")),
        "{message}"
    );
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    s.assert_unchanged();
}

#[tokio::test]
async fn timeouts_are_errors() {
    if !prereq::ready("timeouts_are_errors") {
        return;
    }
    let s = Scenario::new("timeout", "none");
    let options = FetchOptions {
        attempts: 2,
        request_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        ..test_options()
    };
    // A narinfo that does not come in time.
    let root_hash = s.closure.root["/nix/store/".len().."/nix/store/".len() + 32].to_string();
    s.server.inject(
        &format!("{root_hash}.narinfo"),
        Fault::Delay(Duration::from_secs(2)),
        None,
    );
    s.expect_failure(options.clone(), &s.closure.root, "timed out")
        .await;

    // A NAR that stalls halfway.
    s.server.clear_faults();
    let lib = s.closure.path_named("lib");
    s.server.inject(
        &s.nar_url(&lib),
        Fault::Stall {
            after: 1000,
            duration: Duration::from_secs(2),
        },
        None,
    );
    s.expect_failure(options, &lib, "timed out").await;
}

#[tokio::test]
async fn a_trickling_download_fails_as_too_slow_within_its_windows() {
    if !prereq::ready("a_trickling_download_fails_as_too_slow_within_its_windows") {
        return;
    }
    let s = Scenario::new("trickle", "none");
    let lib = s.closure.path_named("lib");
    let nar = s.nar_url(&lib);
    // A byte every 100 ms never trips a 1 s read timeout: without the speed floor this fetch
    // takes as long as the server cares to trickle (here cut off after 30 s, twice).
    s.server.inject(
        &nar,
        Fault::Trickle {
            interval: Duration::from_millis(100),
            limit: Duration::from_secs(30),
        },
        None,
    );
    let options = FetchOptions {
        attempts: 2,
        read_timeout: Duration::from_secs(1),
        min_bytes_per_sec: 1024,
        ..test_options()
    };
    let started = std::time::Instant::now();
    let error = s.expect_failure(options, &lib, "download too slow").await;
    let waited = started.elapsed();
    assert!(
        error.to_string().contains("(gave up after 2 attempts)"),
        "{error}"
    );
    // Two windows of a second, the chunk that ends each, and a little backoff.
    assert!(waited < Duration::from_secs(6), "waited {waited:?}");
    assert_eq!(s.server.count(&nar), 2);
}

#[tokio::test]
async fn a_failing_substituter_falls_back_to_the_next_and_credentials_are_sent() {
    if !prereq::ready("a_failing_substituter_falls_back_to_the_next_and_credentials_are_sent") {
        return;
    }
    let s = Scenario::new("fallback", "zstd");
    let broken = CacheServer::start(s.cache.root());
    broken.inject(".narinfo", Fault::Status(502), None);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let preferred = SubstituterConfig {
        priority: Some(10),
        ..s.cache.substituter(&broken.url())
    };
    let fallback = SubstituterConfig {
        priority: Some(20),
        token_file: Some(token),
        ..s.substituter()
    };
    // Listed in the wrong order on purpose: priority decides.
    Fetcher::new(vec![fallback, preferred], test_options())
        .unwrap()
        .fetch_closure(&s.closure.roots())
        .await
        .unwrap();
    s.closure.assert_restored();
    assert!(
        broken.count(".narinfo") > 0,
        "the preferred cache was asked first"
    );
    assert_eq!(broken.count("/nar/"), 0);
    let authorizations = s.server.authorizations();
    assert!(!authorizations.is_empty());
    assert!(
        authorizations.iter().all(|a| a == "Bearer s3cret"),
        "{authorizations:?}"
    );
    assert!(
        broken.authorizations().is_empty(),
        "no credentials for another cache"
    );
}

/// NAR tokens written by hand, for archives no encoder would produce.
#[derive(Default)]
struct Nar(Vec<u8>);

impl Nar {
    fn token(mut self, bytes: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        let padded = self.0.len().div_ceil(8) * 8;
        self.0.resize(padded, 0);
        self
    }
    fn tokens(self, tokens: &[&[u8]]) -> Self {
        tokens.iter().fold(self, |nar, t| nar.token(t))
    }
    fn start() -> Self {
        Nar::default().token(b"nix-archive-1")
    }
    fn file(self, contents: &[u8]) -> Self {
        self.tokens(&[b"(", b"type", b"regular", b"contents", contents, b")"])
    }
    fn entry(self, name: &[u8], node: impl FnOnce(Nar) -> Nar) -> Self {
        node(self.tokens(&[b"entry", b"(", b"name", name, b"node"])).token(b")")
    }
    fn dir(self, children: impl FnOnce(Nar) -> Nar) -> Self {
        children(self.tokens(&[b"(", b"type", b"directory"])).token(b")")
    }
    fn symlink(self, target: &[u8]) -> Self {
        self.tokens(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }
}

/// Archives no honest cache serves, each with what its rejection says: a malformed NAR, or
/// the local write the kernel refuses. None of them may leave anything in the store.
fn hostile_nars() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let one = |name: &[u8]| Nar::start().dir(|n| n.entry(name, |n| n.file(b"x"))).0;
    let two = |a: &'static [u8], b: &'static [u8]| {
        Nar::start()
            .dir(|n| n.entry(a, |n| n.file(b"x")).entry(b, |n| n.file(b"y")))
            .0
    };
    let mut padding = Nar::start().file(b"abc").0;
    let at = padding.windows(3).position(|w| w == b"abc").unwrap();
    padding[at + 3] = 1;
    let mut trailing = Nar::start().file(b"ok").0;
    trailing.extend_from_slice(&8u64.to_le_bytes());
    let mut deep = Nar::start();
    for _ in 0..300 {
        deep = deep.tokens(&[
            b"(",
            b"type",
            b"directory",
            b"entry",
            b"(",
            b"name",
            b"d",
            b"node",
        ]);
    }
    let escape = Nar::start()
        .dir(|n| {
            n.entry(b"a", |n| n.symlink(b"/tmp"))
                .entry(b"a", |n| n.dir(|n| n.entry(b"pwned", |n| n.file(b"x"))))
        })
        .0;
    // A symlink out of the path, then a file "through" it: the second entry is a sibling with
    // its own name, so it lands inside the path however the link points.
    let link_then_sibling = Nar::start()
        .dir(|n| {
            n.entry(b"a", |n| n.symlink(b"../../../tmp"))
                .entry(b"a/pwned", |n| n.file(b"x"))
        })
        .0;
    // Names longer than any filesystem allows (255 bytes), and a name token far longer than
    // any name, which must be refused before it is read into memory.
    let long_name = one(&[b'n'; 256]);
    let mut huge_token = Nar::start()
        .tokens(&[b"(", b"type", b"directory", b"entry", b"(", b"name"])
        .0;
    huge_token.extend_from_slice(&(1u64 << 40).to_le_bytes());
    huge_token.extend_from_slice(&[b'n'; 4096]);
    let long_target = Nar::start().symlink(&[b't'; 8192]).0;
    // Contents that claim more bytes than the archive has.
    let mut short_contents = Nar::start()
        .tokens(&[b"(", b"type", b"regular", b"contents"])
        .0;
    short_contents.extend_from_slice(&u64::MAX.to_le_bytes());
    short_contents.extend_from_slice(b"only a few bytes");
    const MALFORMED: &str = "malformed nar from";
    vec![
        ("dot-dot", one(b".."), MALFORMED),
        ("dot", one(b"."), MALFORMED),
        ("empty-name", one(b""), MALFORMED),
        ("slash", one(b"etc/passwd"), MALFORMED),
        ("nul", one(b"a\0b"), MALFORMED),
        ("unsorted", two(b"b", b"a"), MALFORMED),
        ("duplicate", two(b"a", b"a"), MALFORMED),
        ("symlink-then-dir", escape, MALFORMED),
        ("symlink-then-child", link_then_sibling, MALFORMED),
        ("padding", padding, MALFORMED),
        ("trailing", trailing, MALFORMED),
        ("deep", deep.0, MALFORMED),
        ("huge-name-token", huge_token, MALFORMED),
        ("long-name", long_name, "File name too long"),
        ("long-symlink-target", long_target, "File name too long"),
        ("short-contents", short_contents, MALFORMED),
    ]
}

/// A trusted but compromised cache: serves `nar` (compressed as `compression` says) as a new
/// path named after `what`, with a narinfo signed by the cache's trusted key that states
/// `nar_size` and `references` (full paths, as signed).
fn serve_signed(
    s: &Scenario,
    what: &str,
    body: &[u8],
    compression: &str,
    nar_hash: [u8; 32],
    nar_size: u64,
    references: &[&str],
) -> StorePath {
    let secret = std::fs::read_to_string(&s.cache.secret_key_file).unwrap();
    let (key_name, secret) = secret.trim().split_once(':').unwrap();
    let secret: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap()
        .try_into()
        .unwrap();
    let signing = ed25519_dalek::SigningKey::from_keypair_bytes(&secret).unwrap();
    let name = format!("nixlet-fetch-{}-{what}", s.closure.tag);
    let hash = nixlet_store::nix32::encode(&Sha256::digest(name.as_bytes())[..20]);
    let path = StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap();
    let nar_hash_text = format!("sha256:{}", nixlet_store::nix32::encode(&nar_hash));
    // Written out rather than through signature::fingerprint, which takes only valid paths.
    let fingerprint = format!(
        "1;{path};{nar_hash_text};{nar_size};{}",
        references.join(",")
    );
    let signature = ed25519_dalek::Signer::sign(&signing, fingerprint.as_bytes());
    let nar_file = format!("nar/{what}.nar");
    std::fs::write(s.cache.root().join(&nar_file), body).unwrap();
    let base_names: Vec<&str> = references
        .iter()
        .map(|r| r.strip_prefix("/nix/store/").unwrap_or(r))
        .collect();
    let narinfo = format!(
        "StorePath: {path}\nURL: {nar_file}\nCompression: {compression}\nNarHash: {nar_hash_text}\n\
         NarSize: {nar_size}\nReferences: {}\nSig: {key_name}:{}\n",
        base_names.join(" "),
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    );
    std::fs::write(s.cache.root().join(format!("{hash}.narinfo")), narinfo).unwrap();
    path
}

async fn fetch_one(s: &Scenario, path: &StorePath) -> FetchError {
    Fetcher::new(vec![s.substituter()], test_options())
        .unwrap()
        .fetch_closure(std::slice::from_ref(path))
        .await
        .expect_err("a hostile path must be refused")
}

#[tokio::test]
async fn hostile_nars_from_a_trusted_cache_are_refused() {
    if !prereq::ready("hostile_nars_from_a_trusted_cache_are_refused") {
        return;
    }
    // The narinfos are validly signed by the trusted key; the NARs are hostile.
    let s = Scenario::new("hostile", "none");
    for (what, nar, cause) in hostile_nars() {
        let nar_hash: [u8; 32] = Sha256::digest(&nar).into();
        let path = serve_signed(&s, what, &nar, "none", nar_hash, nar.len() as u64, &[]);
        let message = fetch_one(&s, &path).await.to_string();
        assert!(
            message.contains(&format!("cannot fetch {path} from {}", s.server.url())),
            "{what}: {message}"
        );
        assert!(message.contains(cause), "{what}: {message}");
        s.assert_unchanged();
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

/// A NAR of one regular file of `size` zero bytes (a multiple of 8), compressed as Nix names
/// `compression`, streamed through the encoder so the expanded bytes never sit in memory.
fn zero_file_nar(compression: &str, size: u64) -> Vec<u8> {
    use std::io::Write;
    fn feed<W: Write>(mut encoder: W, size: u64) -> W {
        let head = Nar::start()
            .tokens(&[b"(", b"type", b"regular", b"contents"])
            .0;
        encoder.write_all(&head).unwrap();
        encoder.write_all(&size.to_le_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            encoder.write_all(&chunk[..n as usize]).unwrap();
            left -= n;
        }
        encoder.write_all(&Nar::default().token(b")").0).unwrap();
        encoder
    }
    match compression {
        "xz" => feed(xz2::write::XzEncoder::new(Vec::new(), 1), size)
            .finish()
            .unwrap(),
        "zstd" => feed(
            zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap(),
            size,
        )
        .finish()
        .unwrap(),
        "bzip2" => feed(
            bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast()),
            size,
        )
        .finish()
        .unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

#[tokio::test]
async fn decompression_bombs_stop_at_the_signed_nar_size() {
    if !prereq::ready("decompression_bombs_stop_at_the_signed_nar_size") {
        return;
    }
    let s = Scenario::new("bomb", "none");
    // 64 MiB of zeros compress to a few kilobytes; the signed narinfo says the NAR is 4 KiB.
    const EXPANDED: u64 = 64 << 20;
    const CLAIMED: u64 = 4096;
    for compression in ["xz", "zstd", "bzip2"] {
        let body = zero_file_nar(compression, EXPANDED);
        assert!(body.len() < 1 << 20, "{compression}: {} bytes", body.len());
        let path = serve_signed(
            &s,
            &format!("bomb-{compression}"),
            &body,
            compression,
            [0; 32],
            CLAIMED,
            &[],
        );
        let message = fetch_one(&s, &path).await.to_string();
        assert!(message.contains(&path.to_string()), "{message}");
        assert!(
            message.contains(&format!(
                "nar size mismatch: narinfo says {CLAIMED} bytes, the download has more than {CLAIMED}"
            )),
            "{compression}: {message}"
        );
        s.assert_unchanged();
    }
}

#[tokio::test]
async fn signed_narinfos_naming_paths_outside_the_store_are_refused() {
    if !prereq::ready("signed_narinfos_naming_paths_outside_the_store_are_refused") {
        return;
    }
    // Validly signed, so only the parser stands between these and the store.
    let s = Scenario::new("outside", "none");
    let nar = Nar::start().file(b"x").0;
    let nar_hash: [u8; 32] = Sha256::digest(&nar).into();
    for (what, reference) in [
        ("etc-passwd", "/etc/passwd"),
        ("traversal", "/nix/store/../../etc/passwd"),
        ("not-a-store-name", "/nix/store/not-a-hash-name"),
        (
            "other-store",
            "/gnu/store/00000000000000000000000000000000-x",
        ),
    ] {
        let path = serve_signed(
            &s,
            what,
            &nar,
            "none",
            nar_hash,
            nar.len() as u64,
            &[reference],
        );
        let message = fetch_one(&s, &path).await.to_string();
        assert!(message.contains(&path.to_string()), "{what}: {message}");
        assert!(message.contains("narinfo"), "{what}: {message}");
        s.assert_unchanged();
    }
}

/// A content-addressed path (`nix-store --add`) in an unsigned cache.
struct CaScenario {
    tag: String,
    path: String,
    cache_dir: tempfile::TempDir,
    server: CacheServer,
    before: StoreSnapshot,
}

impl CaScenario {
    fn new(test: &str) -> CaScenario {
        let tag = nix_fixture::unique_tag(test);
        let source = tempfile::tempdir().unwrap();
        let dir = source.path().join(format!("nixlet-fetch-{tag}-ca"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/data"), format!("genuine {tag}")).unwrap();
        std::os::unix::fs::symlink("sub/data", dir.join("link")).unwrap();
        let path = nix(&["nix-store", "--add", dir.to_str().unwrap()])
            .trim()
            .to_string();
        let cache_dir = tempfile::tempdir().unwrap();
        nix(&[
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--to",
            &format!("file://{}?compression=none", cache_dir.path().display()),
            &path,
        ]);
        nix_fixture::delete_paths(std::slice::from_ref(&path));
        let server = CacheServer::start(cache_dir.path().to_path_buf());
        let before = StoreSnapshot::take(&tag);
        CaScenario {
            tag,
            path,
            cache_dir,
            server,
            before,
        }
    }

    fn narinfo_file(&self) -> std::path::PathBuf {
        let hash = &self.path["/nix/store/".len().."/nix/store/".len() + 32];
        self.cache_dir.path().join(format!("{hash}.narinfo"))
    }

    async fn fetch(
        &self,
        require_signatures: bool,
    ) -> Result<nixlet_store::FetchSummary, FetchError> {
        let substituter = SubstituterConfig {
            url: self.server.url(),
            ..SubstituterConfig::default()
        };
        let options = FetchOptions {
            require_signatures,
            ..test_options()
        };
        Fetcher::new(vec![substituter], options)
            .unwrap()
            .fetch_closure(&[StorePath::parse(&self.path).unwrap()])
            .await
    }
}

impl Drop for CaScenario {
    fn drop(&mut self) {
        nix_fixture::delete_paths(std::slice::from_ref(&self.path));
    }
}

#[tokio::test]
async fn an_unsigned_content_addressed_path_is_accepted_only_when_allowed() {
    if !prereq::ready("an_unsigned_content_addressed_path_is_accepted_only_when_allowed") {
        return;
    }
    let s = CaScenario::new("caok");
    let narinfo = std::fs::read_to_string(s.narinfo_file()).unwrap();
    assert!(narinfo.contains("CA: fixed:r:sha256:"), "{narinfo}");
    assert!(!narinfo.contains("Sig:"), "{narinfo}");

    let error = s.fetch(true).await.unwrap_err();
    assert!(
        error.to_string().contains("signatures are required"),
        "{error}"
    );
    assert_eq!(StoreSnapshot::take(&s.tag), s.before);

    let summary = s.fetch(false).await.unwrap();
    assert_eq!(summary.paths_fetched, 1);
    nix(&["nix-store", "--verify-path", &s.path]);
    // Registered with its content address, so Nix itself trusts it without a signature.
    nix(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "store",
        "verify",
        &s.path,
    ]);
    assert_eq!(
        std::fs::read_to_string(format!("{}/sub/data", s.path)).unwrap(),
        format!("genuine {}", s.tag)
    );
}

#[tokio::test]
async fn a_genuine_ca_line_next_to_a_forged_nar_is_refused() {
    if !prereq::ready("a_genuine_ca_line_next_to_a_forged_nar_is_refused") {
        return;
    }
    let s = CaScenario::new("caforged");
    // The attacker's contents, as a NAR that really hashes to the NarHash it is served with.
    let evil = tempfile::tempdir().unwrap();
    std::fs::write(evil.path().join("data"), "evil").unwrap();
    let output = std::process::Command::new("nix-store")
        .args(["--dump", evil.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let nar = output.stdout;
    std::fs::write(s.cache_dir.path().join("nar/forged.nar"), &nar).unwrap();
    let nar_hash = nixlet_store::nix32::encode(&Sha256::digest(&nar));
    let genuine = std::fs::read_to_string(s.narinfo_file()).unwrap();
    let forged: Vec<String> = genuine
        .lines()
        .filter(|l| !l.starts_with("FileHash:") && !l.starts_with("FileSize:"))
        .map(|line| {
            if line.starts_with("URL:") {
                "URL: nar/forged.nar".to_string()
            } else if line.starts_with("NarHash:") {
                format!("NarHash: sha256:{nar_hash}")
            } else if line.starts_with("NarSize:") {
                format!("NarSize: {}", nar.len())
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(forged.iter().any(|l| l.starts_with("CA: fixed:r:sha256:")));
    std::fs::write(s.narinfo_file(), forged.join("\n") + "\n").unwrap();

    let error = s.fetch(false).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&s.path), "{message}");
    assert!(message.contains(&s.server.url()), "{message}");
    assert!(
        message.contains(&format!(
            "is forged: the downloaded contents hash to sha256:{nar_hash}"
        )),
        "{message}"
    );
    assert_eq!(StoreSnapshot::take(&s.tag), s.before);
}
