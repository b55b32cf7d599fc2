//! One look at a substituter, as `nixlet doctor` takes it: does its configuration hold (URL,
//! keys, credentials), and does it answer `nix-cache-info` for `/nix/store`? Uses the fetcher's
//! own client and parser, so a cache that passes here is one Create can talk to.

use std::time::Duration;

use crate::cache_info::CacheInfo;
use crate::fetch_error::{FetchCause, FetchError};
use crate::http_client::{HttpClient, RetryPolicy};
use crate::substituter::{Substituter, SubstituterConfig};

#[derive(Debug, thiserror::Error)]
pub enum CacheProbeError {
    /// The node config's entry itself is wrong (URL, key syntax, credentials file).
    #[error(transparent)]
    Config(FetchError),
    /// The cache did not answer as a Nix binary cache.
    #[error("{url}/nix-cache-info: {cause}")]
    Answer { url: String, cause: FetchCause },
}

/// Reads `nix-cache-info` once (no retries: a doctor reports what it sees), each request
/// limited to `timeout`.
pub async fn probe_cache_info(
    config: &SubstituterConfig,
    timeout: Duration,
) -> Result<CacheInfo, CacheProbeError> {
    let substituter = Substituter::new(config).map_err(CacheProbeError::Config)?;
    let retry = RetryPolicy {
        attempts: 1,
        first_backoff: Duration::ZERO,
    };
    let http = HttpClient::new(timeout, timeout, timeout, retry)
        .map_err(|message| CacheProbeError::Config(FetchError::HttpClient(message)))?;
    substituter
        .cache_info(&http)
        .await
        .cloned()
        .map_err(|cause| CacheProbeError::Answer {
            url: substituter.url.clone(),
            cause,
        })
}
