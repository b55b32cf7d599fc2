//! The HTTP side of talking to binary caches: one client, timeouts, error classification and
//! retries with exponential backoff.

use std::future::Future;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use reqwest::{Client, Response, StatusCode, Url};

use crate::fetch_error::FetchCause;
use crate::speed_floor::SpeedFloor;

/// How a request authenticates to a cache.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    Bearer(String),
    Basic { login: String, password: String },
}

// Never print secrets, not even in debug logs.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(..)"),
            Auth::Basic { login, .. } => write!(f, "Basic({login}, ..)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, at least 1.
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub first_backoff: Duration,
}

impl RetryPolicy {
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(failed_attempts.saturating_sub(1)))
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client,
    pub retry: RetryPolicy,
    /// Whole-request limit for small documents (narinfo, nix-cache-info).
    pub request_timeout: Duration,
    /// The slowest NAR body worth waiting for (`speed_floor.rs`).
    pub speed_floor: SpeedFloor,
}

impl HttpClient {
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        request_timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<HttpClient, String> {
        let client = Client::builder()
            .connect_timeout(connect_timeout)
            // NARs can be large: no total limit, but a stalled transfer is an error.
            .read_timeout(read_timeout)
            .user_agent(concat!("nixlet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| error_chain(&error))?;
        Ok(HttpClient {
            client,
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
            request_timeout,
            speed_floor: SpeedFloor {
                window: read_timeout,
                min_bytes_per_sec: 0,
            },
        })
    }

    /// Sets the slowest NAR download accepted, in bytes per second over each read-timeout
    /// window (0: no floor).
    pub fn with_min_bytes_per_sec(mut self, min_bytes_per_sec: u64) -> HttpClient {
        self.speed_floor.min_bytes_per_sec = min_bytes_per_sec;
        self
    }

    /// Sends one GET; `auth` goes along only when `url` is on `auth_origin` (a NAR URL may point
    /// at another host, which must not learn the cache's credentials).
    pub async fn get(
        &self,
        url: &Url,
        auth: Option<(&Auth, &Url)>,
        total_timeout: Option<Duration>,
    ) -> Result<Response, FetchCause> {
        let mut request = self.client.get(url.clone());
        if let Some(timeout) = total_timeout {
            request = request.timeout(timeout);
        }
        if let Some((auth, origin)) = auth {
            if same_origin(url, origin) {
                request = match auth {
                    Auth::Bearer(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
                    Auth::Basic { login, password } => request.basic_auth(login, Some(password)),
                };
            }
        }
        request
            .send()
            .await
            .map_err(|error| classify(url.as_str(), &error))
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Whether a status means "this cache does not have it" (403: S3 without list permission).
pub fn is_absent(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE
    )
}

/// Turns a reqwest error into a cause that says what kind of failure it was.
pub fn classify(url: &str, error: &reqwest::Error) -> FetchCause {
    let url = url.to_string();
    let message = error_chain(error);
    if error.is_timeout() {
        FetchCause::Timeout { url, message }
    } else if error.is_connect() {
        FetchCause::Connect { url, message }
    } else {
        FetchCause::Transfer { url, message }
    }
}

/// The causes of an error, without reqwest's outer "error sending request for url (…)" wrapper
/// (the url is already in the message around it).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        current = cause.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy's attempts are used up.
pub async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T, FetchCause>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, FetchCause>>,
{
    let mut number = 1;
    loop {
        match attempt(number).await {
            Ok(value) => return Ok(value),
            Err(cause) if cause.is_transient() && number < policy.attempts => {
                let wait = policy.backoff(number);
                tracing::warn!(what, attempt = number, wait_ms = wait.as_millis() as u64, error = %cause, "transient failure, retrying");
                tokio::time::sleep(wait).await;
                number += 1;
            }
            Err(cause) if cause.is_transient() && number > 1 => {
                return Err(FetchCause::GaveUp {
                    attempts: number,
                    last: Box::new(cause),
                })
            }
            Err(cause) => return Err(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        let policy = RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(100),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(400));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_reported_with_the_count() {
        let policy = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(1),
        };
        let mut calls = 0;
        let result: Result<(), _> = with_retries(policy, "test", |_| {
            calls += 1;
            async {
                Err(FetchCause::HttpStatus {
                    url: "http://cache/x".into(),
                    status: 503,
                })
            }
        })
        .await;
        assert_eq!(calls, 3);
        assert_eq!(
            result.unwrap_err().to_string(),
            "http://cache/x answered http 503 (gave up after 3 attempts)"
        );

        let mut calls = 0;
        let result: Result<(), _> = with_retries(policy, "test", |_| {
            calls += 1;
            async { Err(FetchCause::Unsigned) }
        })
        .await;
        assert_eq!(calls, 1, "permanent failures are not retried");
        assert!(matches!(result, Err(FetchCause::Unsigned)));

        let mut calls = 0;
        let result = with_retries(policy, "test", |n| {
            calls += 1;
            async move {
                if n < 2 {
                    Err(FetchCause::Connect {
                        url: "u".into(),
                        message: "refused".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls, 2);
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        let cache = Url::parse("https://cache.example.org/sub/").unwrap();
        assert!(same_origin(
            &Url::parse("https://cache.example.org/nar/x").unwrap(),
            &cache
        ));
        assert!(same_origin(
            &Url::parse("https://cache.example.org:443/nar/x").unwrap(),
            &cache
        ));
        assert!(!same_origin(
            &Url::parse("https://cdn.example.org/nar/x").unwrap(),
            &cache
        ));
        assert!(!same_origin(
            &Url::parse("http://cache.example.org/nar/x").unwrap(),
            &cache
        ));
    }
}
