//! The `http` source: the `dir` layout below a base URL.
//!
//! ```text
//! <base>/<owner>/<name>/current              the latest generation's number
//! <base>/<owner>/<name>/<N>/manifest.toml
//! <base>/<owner>/<name>/<N>/manifest.lock    optional
//! ```
//!
//! Any static file server (or object store) can serve it; no directory listing is needed:
//!
//! - latest: the number in `current`;
//! - `:N`: generation N; when it answers 404, `current` tells whether the environment is
//!   there at all (404: not here, ask the next source) or only that generation is missing;
//! - `@sha256:HEX`: the lock of each generation from `current` downwards, at most
//!   [`HttpSourceOptions::digest_search_depth`] of them, newest first, until one hashes to
//!   HEX. Pins usually name a recent generation, and the bound keeps a wrong digest from
//!   costing one request per generation ever published.
//!
//! A 404 for `current` means the server does not have the environment (`Ok(None)`); 401 and
//! 403 are authentication failures naming the URL and what was sent; connection errors,
//! timeouts, 429 and 5xx are retried with exponential backoff, then reported with the URL.

use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};

use crate::reference::{parse_generation_number, EnvRef, Selector};
use crate::source::dir::{CURRENT_FILE, LOCK_FILE, MANIFEST_FILE};
use crate::source::http_auth::Credentials;
use crate::source::netrc::NetrcError;
use crate::source::{EnvironmentSource, LoadedEnvironment, SourceError};

/// A manifest or lock is kilobytes; a body this large means the URL points somewhere else.
const MAX_BODY: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSourceOptions {
    /// A file holding a bearer token; when set, `netrc_file` is not read.
    pub token_file: Option<PathBuf>,
    /// A netrc file whose entry for the server's host gives basic-auth credentials.
    pub netrc_file: Option<PathBuf>,
    /// For each request, from connecting to the end of the body.
    pub timeout: Duration,
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Wait before the second try, doubled before each further one.
    pub retry_delay: Duration,
    /// How many generations a digest pin searches, from `current` downwards.
    pub digest_search_depth: u64,
}

impl Default for HttpSourceOptions {
    fn default() -> Self {
        HttpSourceOptions {
            token_file: None,
            netrc_file: None,
            timeout: Duration::from_secs(30),
            attempts: 3,
            retry_delay: Duration::from_millis(500),
            digest_search_depth: 50,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    #[error("invalid http source url {url:?}: {problem}")]
    InvalidUrl { url: String, problem: String },
    #[error("cannot set up the http client: {0}")]
    Client(String),
    #[error("cannot read bearer token file {:?}: {source}", .path.display().to_string())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bearer token file {:?} is empty", .path.display().to_string())]
    EmptyToken { path: PathBuf },
    #[error(
        "the bearer token in {:?} contains whitespace or control characters",
        .path.display().to_string()
    )]
    InvalidToken { path: PathBuf },
    #[error("cannot read netrc file {:?}: {source}", .path.display().to_string())]
    NetrcFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netrc file {:?}: {source}", .path.display().to_string())]
    Netrc {
        path: PathBuf,
        #[source]
        source: NetrcError,
    },
    #[error("authentication failed for {url} (http {status}); sent {credentials}")]
    AuthenticationFailed {
        url: String,
        status: String,
        /// What was sent, without the secret.
        credentials: String,
    },
    #[error("{url} answered http {status} after {attempts} attempt(s)")]
    Status {
        url: String,
        status: String,
        attempts: u32,
    },
    #[error("cannot reach {url} after {attempts} attempt(s): {message}")]
    Unreachable {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("{url} is not valid utf-8")]
    NotUtf8 { url: String },
    #[error("{url} answered more than {limit} bytes; a manifest or lock is far smaller")]
    TooLarge { url: String, limit: u64 },
    /// The server's answer can be up to 64 MiB: only its start is quoted.
    #[error(
        "{url} must hold a generation (a number from 1 up), found {}",
        crate::reference::quoted(.found)
    )]
    InvalidCurrent { url: String, found: String },
    #[error("environment {environment:?} has no generation {generation}: {url} answered 404")]
    GenerationMissing {
        environment: String,
        generation: u64,
        url: String,
    },
    #[error(
        "no generation of environment {environment:?} from {newest} down to {oldest} at {url} \
         has a manifest.lock whose sha256 is {digest}"
    )]
    DigestNotFound {
        environment: String,
        digest: String,
        url: String,
        newest: u64,
        oldest: u64,
    },
}

/// Checks a base URL as the node configuration gives it: absolute `http` or `https`, with a
/// host, and without credentials, query or fragment (credentials belong in a token or netrc
/// file, where they do not end up in logs).
pub fn validate_base_url(url: &str) -> Result<Url, HttpSourceError> {
    let invalid = |problem: &str| HttpSourceError::InvalidUrl {
        url: url.to_string(),
        problem: problem.to_string(),
    };
    let parsed = Url::parse(url).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("only http and https are supported"));
    }
    if !matches!(parsed.host_str(), Some(host) if !host.is_empty()) {
        return Err(invalid("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "credentials in the url are not allowed; use a token file or a netrc file",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed"));
    }
    Ok(parsed)
}

#[derive(Debug)]
pub struct HttpSource {
    base_url: String,
    options: HttpSourceOptions,
    /// Built on first use: construction cannot fail, and a node whose pods never name an
    /// environment never starts the client's thread.
    client: OnceLock<Client>,
}

impl HttpSource {
    /// A source below `base_url`; an invalid URL is reported when the source is first used
    /// (check it early with [`validate_base_url`]).
    pub fn new(base_url: impl Into<String>, options: HttpSourceOptions) -> HttpSource {
        HttpSource {
            base_url: base_url.into(),
            options,
            client: OnceLock::new(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn client(&self) -> Result<&Client, HttpSourceError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = Client::builder()
            .timeout(self.options.timeout)
            .connect_timeout(self.options.timeout)
            .user_agent(concat!("nixlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| HttpSourceError::Client(error_chain(&error)))?;
        Ok(self.client.get_or_init(|| client))
    }

    fn load_from(
        &self,
        base: &Url,
        reference: &EnvRef,
    ) -> Result<Option<LoadedEnvironment>, HttpSourceError> {
        let host = base.host_str().unwrap_or_default();
        let credentials = Credentials::load(&self.options, host)?;
        if credentials.is_some() && base.scheme() == "http" {
            tracing::warn!(
                url = %self.base_url,
                "sending credentials over plain http; use https outside a trusted network"
            );
        }
        let fetch = Fetcher {
            client: self.client()?,
            credentials: &credentials,
            options: &self.options,
        };
        let env_url = child(base, &[&reference.owner, &reference.name]);
        let environment = reference.owner_and_name();

        let (generation, known_lock) = match reference.selector {
            Selector::Latest => match fetch.current(&env_url)? {
                Some(generation) => (generation, None),
                None => return Ok(None),
            },
            Selector::Generation(generation) => (generation, None),
            Selector::Digest(digest) => {
                let Some(newest) = fetch.current(&env_url)? else {
                    return Ok(None);
                };
                let oldest = newest
                    .saturating_sub(self.options.digest_search_depth.saturating_sub(1))
                    .max(1);
                let mut found = None;
                for generation in (oldest..=newest).rev() {
                    let lock_url = child(&env_url, &[&generation.to_string(), LOCK_FILE]);
                    if let Some(lock) = fetch.get(&lock_url)? {
                        if Sha256::digest(&lock).as_slice() == digest {
                            found = Some((generation, lock));
                            break;
                        }
                    }
                }
                let (generation, lock) = found.ok_or_else(|| HttpSourceError::DigestNotFound {
                    environment: environment.clone(),
                    digest: hex::encode(digest),
                    url: env_url.to_string(),
                    newest,
                    oldest,
                })?;
                (generation, Some(lock))
            }
        };

        let generation_url = child(&env_url, &[&generation.to_string()]);
        let manifest_url = child(&generation_url, &[MANIFEST_FILE]);
        let Some(manifest_bytes) = fetch.get(&manifest_url)? else {
            // A pinned generation may be asked of a server without the environment at all:
            // that is "not here", for the next source to answer.
            if reference.selector == Selector::Generation(generation)
                && fetch.current(&env_url)?.is_none()
            {
                return Ok(None);
            }
            return Err(HttpSourceError::GenerationMissing {
                environment,
                generation,
                url: manifest_url.to_string(),
            });
        };
        let manifest_toml =
            String::from_utf8(manifest_bytes).map_err(|_| HttpSourceError::NotUtf8 {
                url: manifest_url.to_string(),
            })?;
        let manifest_lock = match known_lock {
            Some(lock) => Some(lock),
            None => fetch.get(&child(&generation_url, &[LOCK_FILE]))?,
        };
        tracing::debug!(
            environment = %environment,
            generation,
            url = %generation_url,
            locked = manifest_lock.is_some(),
            "loaded environment over http"
        );
        Ok(Some(LoadedEnvironment {
            reference: reference.clone(),
            generation,
            location: generation_url.to_string(),
            manifest_toml,
            manifest_lock,
        }))
    }
}

impl EnvironmentSource for HttpSource {
    fn describe(&self) -> String {
        format!("http {}", self.base_url)
    }

    fn load(&self, reference: &EnvRef) -> Result<Option<LoadedEnvironment>, SourceError> {
        let base = validate_base_url(&self.base_url)?;
        Ok(self.load_from(&base, reference)?)
    }
}

/// `base` with `segments` appended as path segments (each percent-encoded as needed).
fn child(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

struct Fetcher<'a> {
    client: &'a Client,
    credentials: &'a Credentials,
    options: &'a HttpSourceOptions,
}

impl Fetcher<'_> {
    /// The generation `current` names; `None` when the server has no `current` for the
    /// environment, i.e. does not have the environment.
    fn current(&self, env_url: &Url) -> Result<Option<u64>, HttpSourceError> {
        let url = child(env_url, &[CURRENT_FILE]);
        let Some(bytes) = self.get(&url)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        parse_generation_number(text.trim())
            .map(Some)
            .ok_or_else(|| HttpSourceError::InvalidCurrent {
                url: url.to_string(),
                found: text.into_owned(),
            })
    }

    /// The body of `url`, or `None` on 404.
    fn get(&self, url: &Url) -> Result<Option<Vec<u8>>, HttpSourceError> {
        let attempts = self.options.attempts.max(1);
        let mut delay = self.options.retry_delay;
        let mut attempt = 1;
        loop {
            let failure = match self.try_get(url) {
                Ok(Outcome::Body(bytes)) => return Ok(Some(bytes)),
                Ok(Outcome::NotFound) => return Ok(None),
                Err(Attempt::Fatal(error)) => return Err(error),
                Err(Attempt::Retryable(failure)) => failure,
            };
            tracing::debug!(url = %url, attempt, failure = ?failure, "http request failed");
            if attempt >= attempts {
                return Err(match failure {
                    Failure::Status(status) => HttpSourceError::Status {
                        url: url.to_string(),
                        status,
                        attempts,
                    },
                    Failure::Transport(message) => HttpSourceError::Unreachable {
                        url: url.to_string(),
                        attempts,
                        message,
                    },
                });
            }
            std::thread::sleep(delay);
            delay = delay.saturating_mul(2);
            attempt += 1;
        }
    }

    fn try_get(&self, url: &Url) -> Result<Outcome, Attempt> {
        let request = self.credentials.apply(self.client.get(url.clone()));
        let response = request
            .send()
            .map_err(|error| Attempt::Retryable(Failure::Transport(self.transport(&error))))?;
        let status = response.status();
        match status {
            StatusCode::NOT_FOUND => Ok(Outcome::NotFound),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Attempt::Fatal(HttpSourceError::AuthenticationFailed {
                    url: url.to_string(),
                    status: status.to_string(),
                    credentials: self.credentials.describe(),
                }))
            }
            status if status.is_success() => read_body(response, url).map(Outcome::Body),
            status if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                Err(Attempt::Retryable(Failure::Status(status.to_string())))
            }
            status => Err(Attempt::Fatal(HttpSourceError::Status {
                url: url.to_string(),
                status: status.to_string(),
                attempts: 1,
            })),
        }
    }

    fn transport(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            format!("no answer within {:?}", self.options.timeout)
        } else {
            error_chain(error)
        }
    }
}

/// The body, refusing more than [`MAX_BODY`] bytes.
fn read_body(response: Response, url: &Url) -> Result<Vec<u8>, Attempt> {
    let mut body = Vec::new();
    response
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|error| Attempt::Retryable(Failure::Transport(error_chain(&error))))?;
    if body.len() as u64 > MAX_BODY {
        return Err(Attempt::Fatal(HttpSourceError::TooLarge {
            url: url.to_string(),
            limit: MAX_BODY,
        }));
    }
    Ok(body)
}

enum Outcome {
    Body(Vec<u8>),
    NotFound,
}

enum Attempt {
    Retryable(Failure),
    Fatal(HttpSourceError),
}

#[derive(Debug)]
enum Failure {
    Status(String),
    Transport(String),
}

/// An error and its causes: reqwest's own message only says that sending failed; the cause
/// says why (connection refused, no route, certificate…).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;
    use std::net::TcpListener;

    use super::*;
    use crate::source::test_http_server::{ServerConfig, TestServer};

    const MANIFEST: &str = include_str!("../../tests/fixtures/flox-env/manifest.toml");
    const LOCK: &[u8] = include_bytes!("../../tests/fixtures/flox-env/manifest.lock");
    const MANIFEST_V1: &str = "version = 1\n[install]\nhello.store-path = \
                               \"/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1\"\n";
    const LOCK_V1: &str =
        "{\"lockfile-version\": 1, \"manifest\": {\"version\": 1}, \"packages\": []}\n";
    const TOKEN: &str = "s3cret-token";

    /// acme/web below `/envs`: generation 1 (small, with a lock), 2 (the fixture, current)
    /// and 3 (no lock, not current).
    fn files() -> HashMap<String, Vec<u8>> {
        [
            ("/envs/acme/web/current", b"2\n".to_vec()),
            (
                "/envs/acme/web/1/manifest.toml",
                MANIFEST_V1.as_bytes().to_vec(),
            ),
            (
                "/envs/acme/web/1/manifest.lock",
                LOCK_V1.as_bytes().to_vec(),
            ),
            (
                "/envs/acme/web/2/manifest.toml",
                MANIFEST.as_bytes().to_vec(),
            ),
            ("/envs/acme/web/2/manifest.lock", LOCK.to_vec()),
            (
                "/envs/acme/web/3/manifest.toml",
                MANIFEST_V1.as_bytes().to_vec(),
            ),
        ]
        .into_iter()
        .map(|(path, body)| (path.to_string(), body))
        .collect()
    }

    fn server(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut config = ServerConfig {
            files: files(),
            ..ServerConfig::default()
        };
        configure(&mut config);
        TestServer::start(config)
    }

    fn fast() -> HttpSourceOptions {
        HttpSourceOptions {
            timeout: Duration::from_secs(5),
            retry_delay: Duration::from_millis(10),
            ..HttpSourceOptions::default()
        }
    }

    fn source(server: &TestServer, options: HttpSourceOptions) -> HttpSource {
        HttpSource::new(format!("{}/envs", server.url()), options)
    }

    fn load(
        source: &HttpSource,
        reference: &str,
    ) -> Result<Option<LoadedEnvironment>, SourceError> {
        source.load(&EnvRef::parse(reference).unwrap())
    }

    fn error_of(source: &HttpSource, reference: &str) -> String {
        load(source, reference).unwrap_err().to_string()
    }

    fn digest_of(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn describes_itself_by_base_url() {
        let source = HttpSource::new("https://envs.example.com/nixlet", fast());
        assert_eq!(source.describe(), "http https://envs.example.com/nixlet");
        assert_eq!(source.base_url(), "https://envs.example.com/nixlet");
    }

    #[test]
    fn latest_is_the_generation_current_names() {
        let server = server(|_| {});
        let loaded = load(&source(&server, fast()), "acme/web").unwrap().unwrap();
        assert_eq!(loaded.generation, 2);
        assert_eq!(loaded.location, format!("{}/envs/acme/web/2", server.url()));
        assert_eq!(
            loaded.manifest_location(),
            format!("{}/envs/acme/web/2/manifest.toml", server.url())
        );
        assert_eq!(loaded.manifest_toml, MANIFEST);
        assert_eq!(loaded.manifest_lock.as_deref(), Some(LOCK));
        assert_eq!(
            server.paths(),
            vec![
                "/envs/acme/web/current",
                "/envs/acme/web/2/manifest.toml",
                "/envs/acme/web/2/manifest.lock"
            ]
        );
        assert!(server
            .seen()
            .iter()
            .all(|seen| seen.authorization.is_none()));
    }

    #[test]
    fn a_trailing_slash_on_the_base_url_changes_nothing() {
        let server = server(|_| {});
        let source = HttpSource::new(format!("{}/envs/", server.url()), fast());
        assert_eq!(load(&source, "acme/web").unwrap().unwrap().generation, 2);
    }

    #[test]
    fn a_generation_pin_reads_that_generation_with_or_without_lock() {
        let server = server(|_| {});
        let source = source(&server, fast());
        let first = load(&source, "acme/web:1").unwrap().unwrap();
        assert_eq!(first.generation, 1);
        assert_eq!(first.manifest_toml, MANIFEST_V1);
        assert_eq!(first.manifest_lock.as_deref(), Some(LOCK_V1.as_bytes()));
        let third = load(&source, "acme/web:3").unwrap().unwrap();
        assert_eq!(third.manifest_lock, None);
    }

    #[test]
    fn a_missing_generation_of_a_present_environment_is_an_error() {
        let server = server(|_| {});
        assert_eq!(
            error_of(&source(&server, fast()), "acme/web:7"),
            format!(
                "environment \"acme/web\" has no generation 7: {}/envs/acme/web/7/manifest.toml \
                 answered 404",
                server.url()
            )
        );
    }

    #[test]
    fn an_absent_environment_is_none_whatever_the_selector() {
        let server = server(|_| {});
        let source = source(&server, fast());
        let digest = digest_of(LOCK);
        for reference in [
            "acme/api",
            "acme/api:2",
            &format!("acme/api@sha256:{digest}"),
        ] {
            assert!(load(&source, reference).unwrap().is_none(), "{reference}");
        }
    }

    #[test]
    fn a_digest_pin_finds_the_generation_whose_lock_matches() {
        let server = server(|_| {});
        let source = source(&server, fast());
        let reference = format!("acme/web@sha256:{}", digest_of(LOCK_V1.as_bytes()));
        let loaded = load(&source, &reference).unwrap().unwrap();
        assert_eq!(loaded.generation, 1);
        assert_eq!(loaded.manifest_toml, MANIFEST_V1);
        assert_eq!(loaded.manifest_lock.as_deref(), Some(LOCK_V1.as_bytes()));
        assert_eq!(
            server.paths(),
            vec![
                "/envs/acme/web/current",
                "/envs/acme/web/2/manifest.lock",
                "/envs/acme/web/1/manifest.lock",
                "/envs/acme/web/1/manifest.toml"
            ]
        );
    }

    #[test]
    fn a_digest_pin_without_match_names_the_generations_searched() {
        let server = server(|_| {});
        let unknown = digest_of(b"something else");
        assert_eq!(
            error_of(
                &source(&server, fast()),
                &format!("acme/web@sha256:{unknown}")
            ),
            format!(
                "no generation of environment \"acme/web\" from 2 down to 1 at \
                 {}/envs/acme/web has a manifest.lock whose sha256 is {unknown}",
                server.url()
            )
        );
        // The search is bounded: generation 1 is out of reach with a depth of 1.
        let shallow = HttpSourceOptions {
            digest_search_depth: 1,
            ..fast()
        };
        let old = digest_of(LOCK_V1.as_bytes());
        assert_eq!(
            error_of(&source(&server, shallow), &format!("acme/web@sha256:{old}")),
            format!(
                "no generation of environment \"acme/web\" from 2 down to 2 at \
                 {}/envs/acme/web has a manifest.lock whose sha256 is {old}",
                server.url()
            )
        );
    }

    #[test]
    fn a_bearer_token_from_a_file_is_sent_with_every_request() {
        let server = server(|config| config.authorization = Some(format!("Bearer {TOKEN}")));
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let options = HttpSourceOptions {
            token_file: Some(token_file),
            ..fast()
        };
        let loaded = load(&source(&server, options), "acme/web")
            .unwrap()
            .unwrap();
        assert_eq!(loaded.generation, 2);
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen
            .iter()
            .all(|seen| seen.authorization.as_deref() == Some("Bearer s3cret-token")));
    }

    #[test]
    fn without_the_token_authentication_fails_naming_the_url_and_what_was_sent() {
        let server = server(|config| config.authorization = Some(format!("Bearer {TOKEN}")));
        assert_eq!(
            error_of(&source(&server, fast()), "acme/web"),
            format!(
                "authentication failed for {}/envs/acme/web/current (http 401 Unauthorized); \
                 sent no credentials (none configured)",
                server.url()
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        fs::write(&token_file, "wrong").unwrap();
        let options = HttpSourceOptions {
            token_file: Some(token_file.clone()),
            ..fast()
        };
        assert_eq!(
            error_of(&source(&server, options), "acme/web:2"),
            format!(
                "authentication failed for {}/envs/acme/web/2/manifest.toml (http 401 \
                 Unauthorized); sent a bearer token from {:?}",
                server.url(),
                token_file.display().to_string()
            )
        );
        // Authentication failures are not retried.
        assert_eq!(server.seen().len(), 2);
    }

    #[test]
    fn forbidden_is_an_authentication_failure_too() {
        let server = server(|config| {
            config
                .statuses
                .insert("/envs/acme/web/current".into(), "403 Forbidden");
        });
        assert_eq!(
            error_of(&source(&server, fast()), "acme/web"),
            format!(
                "authentication failed for {}/envs/acme/web/current (http 403 Forbidden); sent \
                 no credentials (none configured)",
                server.url()
            )
        );
    }

    #[test]
    fn netrc_credentials_for_the_host_are_sent_as_basic_auth() {
        let server = server(|config| config.authorization = Some("Basic Y2k6czNjcmV0".into()));
        let dir = tempfile::tempdir().unwrap();
        let netrc = dir.path().join("netrc");
        fs::write(
            &netrc,
            "machine example.com login other password x\nmachine 127.0.0.1 login ci password s3cret\n",
        )
        .unwrap();
        let options = HttpSourceOptions {
            netrc_file: Some(netrc),
            ..fast()
        };
        assert_eq!(
            load(&source(&server, options), "acme/web")
                .unwrap()
                .unwrap()
                .generation,
            2
        );
    }

    #[test]
    fn server_errors_are_retried_until_the_server_answers() {
        let server = server(|config| {
            config.failures.insert("/envs/acme/web/current".into(), 2);
        });
        assert_eq!(
            load(&source(&server, fast()), "acme/web")
                .unwrap()
                .unwrap()
                .generation,
            2
        );
        let current_requests = server
            .paths()
            .iter()
            .filter(|path| path.ends_with("/current"))
            .count();
        assert_eq!(current_requests, 3);
    }

    #[test]
    fn a_server_that_keeps_failing_is_an_error_after_the_last_attempt() {
        let server = server(|config| {
            config.failures.insert("/envs/acme/web/current".into(), 100);
        });
        assert_eq!(
            error_of(&source(&server, fast()), "acme/web"),
            format!(
                "{}/envs/acme/web/current answered http 500 Internal Server Error after 3 \
                 attempt(s)",
                server.url()
            )
        );
        assert_eq!(server.seen().len(), 3);
    }

    #[test]
    fn other_client_errors_are_not_retried() {
        let server = server(|config| {
            config
                .statuses
                .insert("/envs/acme/web/current".into(), "418 I'm a teapot");
        });
        assert_eq!(
            error_of(&source(&server, fast()), "acme/web"),
            format!(
                "{}/envs/acme/web/current answered http 418 I'm a teapot after 1 attempt(s)",
                server.url()
            )
        );
    }

    #[test]
    fn a_server_that_is_down_is_an_error_naming_the_url() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let options = HttpSourceOptions {
            attempts: 2,
            ..fast()
        };
        let source = HttpSource::new(format!("http://127.0.0.1:{port}"), options);
        let message = error_of(&source, "acme/web");
        let prefix =
            format!("cannot reach http://127.0.0.1:{port}/acme/web/current after 2 attempt(s): ");
        assert!(message.starts_with(&prefix), "{message}");
        assert!(message.contains("refused"), "{message}");
    }

    #[test]
    fn a_server_that_does_not_answer_times_out() {
        let server = server(|config| config.hang.push("/envs/acme/web/current".into()));
        let options = HttpSourceOptions {
            timeout: Duration::from_millis(300),
            attempts: 1,
            ..fast()
        };
        assert_eq!(
            error_of(&source(&server, options), "acme/web"),
            format!(
                "cannot reach {}/envs/acme/web/current after 1 attempt(s): no answer within \
                 300ms",
                server.url()
            )
        );
    }

    #[test]
    fn garbage_in_current_or_the_manifest_is_an_error_naming_the_url() {
        let server = server(|config| {
            config
                .files
                .insert("/envs/acme/web/current".into(), b"latest".to_vec());
            config.files.insert(
                "/envs/acme/web/3/manifest.toml".into(),
                b"version = \xff".to_vec(),
            );
        });
        let source = source(&server, fast());
        assert_eq!(
            error_of(&source, "acme/web"),
            format!(
                "{}/envs/acme/web/current must hold a generation (a number from 1 up), found \
                 \"latest\"",
                server.url()
            )
        );
        assert_eq!(
            error_of(&source, "acme/web:3"),
            format!(
                "{}/envs/acme/web/3/manifest.toml is not valid utf-8",
                server.url()
            )
        );
    }

    #[test]
    fn a_huge_current_is_quoted_only_in_part() {
        // A hostile or misconfigured server answering `current` with megabytes (here 8 MiB of
        // one line) must not put them all into the error, which reaches logs and Events.
        let server = server(|config| {
            config
                .files
                .insert("/envs/acme/web/current".into(), vec![b'x'; 8 << 20]);
        });
        let message = error_of(&source(&server, fast()), "acme/web");
        assert!(message.len() < 1024, "{} bytes", message.len());
        assert!(
            message.ends_with(&format!("… ({} bytes)", 8 << 20)),
            "{message}"
        );
    }

    #[test]
    fn resolves_the_fixture_over_http() {
        let server = server(|_| {});
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![Box::new(source(&server, fast()))];
        let env = crate::resolve(
            &sources,
            &EnvRef::parse("acme/web").unwrap(),
            "x86_64-linux",
        )
        .unwrap();
        assert_eq!(env.display_name(), "acme/web:2");
        assert_eq!(env.packages.len(), 5);
        assert_eq!(env.manifest_lock.as_deref(), Some(LOCK));
    }

    #[test]
    fn base_urls_are_checked() {
        let problem = |url: &str| validate_base_url(url).unwrap_err().to_string();
        assert!(validate_base_url("https://envs.example.com/nixlet/").is_ok());
        assert!(validate_base_url("http://127.0.0.1:8080").is_ok());
        assert_eq!(
            problem("ftp://envs.example.com"),
            "invalid http source url \"ftp://envs.example.com\": only http and https are \
             supported"
        );
        assert_eq!(
            problem("https://ci:pw@envs.example.com"),
            "invalid http source url \"https://ci:pw@envs.example.com\": credentials in the url \
             are not allowed; use a token file or a netrc file"
        );
        assert_eq!(
            problem("https://envs.example.com/?a=b"),
            "invalid http source url \"https://envs.example.com/?a=b\": a query or fragment is \
             not allowed"
        );
        assert_eq!(
            problem("envs.example.com"),
            "invalid http source url \"envs.example.com\": relative URL without a base"
        );
        let source = HttpSource::new("ftp://envs.example.com", fast());
        assert_eq!(
            error_of(&source, "acme/web"),
            "invalid http source url \"ftp://envs.example.com\": only http and https are \
             supported"
        );
    }
}
