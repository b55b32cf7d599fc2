//! A binary cache read over HTTP(S): URLs below its base, its credentials, small documents
//! fetched with retries, and NAR responses.

use reqwest::{Response, Url};

use crate::fetch_error::FetchCause;
use crate::http_client::{classify, is_absent, with_retries, Auth, HttpClient};

#[derive(Debug)]
pub struct HttpCache {
    /// The configured URL ending in `/`, so that relative NAR URLs join below it.
    base: Url,
    auth: Option<Auth>,
}

impl HttpCache {
    pub fn new(base: Url, auth: Option<Auth>) -> HttpCache {
        HttpCache { base, auth }
    }

    pub fn auth(&self) -> Option<(&Auth, &Url)> {
        self.auth.as_ref().map(|auth| (auth, &self.base))
    }

    pub fn join(&self, relative: &str) -> Result<Url, FetchCause> {
        self.base.join(relative).map_err(|e| FetchCause::Transfer {
            url: format!("{}{relative}", self.base),
            message: format!("invalid url: {e}"),
        })
    }

    /// GETs a small document (`nix-cache-info`, a narinfo) with retries; `None` when the cache
    /// says it has no such thing.
    pub async fn document(
        &self,
        http: &HttpClient,
        url: &Url,
        what: &str,
    ) -> Result<Option<Vec<u8>>, FetchCause> {
        with_retries(http.retry, what, |_| async {
            let response = http
                .get(url, self.auth(), Some(http.request_timeout))
                .await?;
            let status = response.status();
            if is_absent(status) {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(FetchCause::HttpStatus {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| classify(url.as_str(), &e))?;
            Ok(Some(body.to_vec()))
        })
        .await
    }

    /// Where a narinfo's `URL` points: below the cache, or anywhere over http(s).
    pub fn nar_url(&self, nar_url: &str) -> Result<Url, FetchCause> {
        let url = self.join(nar_url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchCause::Transfer {
                url: url.to_string(),
                message: "nar url scheme is not http or https".into(),
            });
        }
        Ok(url)
    }

    /// Starts the download of a NAR; the caller retries.
    pub async fn open_nar(&self, http: &HttpClient, url: &Url) -> Result<Response, FetchCause> {
        let response = http.get(url, self.auth(), None).await?;
        let status = response.status();
        if !status.is_success() {
            // Even a 404 is an error here: a cache whose narinfo names a NAR it does not have is
            // broken, not "without the path".
            return Err(FetchCause::HttpStatus {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        Ok(response)
    }
}
