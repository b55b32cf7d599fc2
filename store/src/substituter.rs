//! A binary cache as configured on the node, and the two small documents read from it
//! (`nix-cache-info`, `<hash>.narinfo`).

use std::path::PathBuf;

use nixlet_manifest::{Netrc, StorePath};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::cache_info::CacheInfo;
use crate::fetch_error::{FetchCause, FetchError};
use crate::http_client::{is_absent, with_retries, Auth, HttpClient};
use crate::narinfo::NarInfo;
use crate::signature::TrustedKey;

/// One substituter in the node config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstituterConfig {
    /// `http://` or `https://` base URL of the cache.
    pub url: String,
    /// `name:base64` public keys whose signatures are trusted for this cache.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Overrides the cache's own `nix-cache-info` priority; lower is tried first.
    pub priority: Option<u32>,
    /// A file holding a bearer token (read once when the fetcher is built).
    pub token_file: Option<PathBuf>,
    /// A netrc file with a `machine` entry for the cache's host.
    pub netrc_file: Option<PathBuf>,
    /// Who reads the cache: nixlet itself (`http`, the default) or, as a fallback when nixlet's
    /// own fetch fails, the Nix CLI (`nix-cli`: any store URL Nix reads, e.g. `file://`, `s3://`).
    #[serde(default)]
    pub backend: SubstituterBackend,
    /// `nix-cli` only: how long one `nix-store --realise` may run before its process group is
    /// killed (default 600).
    pub timeout_secs: Option<u64>,
    /// `nix-cli` only: build flake packages of an environment whose outputs no cache has, with
    /// `nix build` (`flake_build.rs`). Off by default: a build can take long and fetch sources
    /// from the network.
    #[serde(default)]
    pub build_flakes: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubstituterBackend {
    #[default]
    Http,
    NixCli,
}

/// A validated substituter, ready for requests.
#[derive(Debug)]
pub struct Substituter {
    /// The configured URL, for messages.
    pub url: String,
    /// The same, ending in `/` so that relative NAR URLs join below it.
    base: Url,
    pub keys: Vec<TrustedKey>,
    configured_priority: Option<u32>,
    auth: Option<Auth>,
    info: OnceCell<CacheInfo>,
}

impl Substituter {
    pub fn new(config: &SubstituterConfig) -> Result<Substituter, FetchError> {
        let invalid = |problem: String| FetchError::InvalidSubstituter {
            url: config.url.clone(),
            problem,
        };
        let trimmed = config.url.trim_end_matches('/');
        let base = Url::parse(&format!("{trimmed}/")).map_err(|e| invalid(e.to_string()))?;
        if config.backend != SubstituterBackend::Http {
            return Err(invalid(
                "only the http backend is read by nixlet itself".into(),
            ));
        }
        if config.timeout_secs.is_some() {
            return Err(invalid(
                "timeout_secs applies to backend \"nix-cli\" only (the http backend uses the \
                 node's fetch timeouts)"
                    .into(),
            ));
        }
        if config.build_flakes {
            return Err(invalid(
                "build_flakes applies to backend \"nix-cli\" only (nixlet itself builds nothing)"
                    .into(),
            ));
        }
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {:?} is not supported; use http or https (or backend \"nix-cli\")",
                base.scheme()
            )));
        }
        let keys = config
            .trusted_keys
            .iter()
            .map(|key| TrustedKey::parse(key).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if config.token_file.is_some() && config.netrc_file.is_some() {
            return Err(invalid(
                "token_file and netrc_file are exclusive: pick one way to authenticate".into(),
            ));
        }
        let auth = if let Some(file) = &config.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| invalid(format!("token file {}: {e}", file.display())))?;
            let token = token.trim();
            if token.is_empty() {
                return Err(invalid(format!("token file {} is empty", file.display())));
            }
            Some(Auth::Bearer(token.to_string()))
        } else if let Some(file) = &config.netrc_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| invalid(format!("netrc file {}: {e}", file.display())))?;
            let netrc = Netrc::parse(&text)
                .map_err(|e| invalid(format!("netrc file {}: {e}", file.display())))?;
            let host = base.host_str().unwrap_or_default();
            let entry = netrc.for_host(host).ok_or_else(|| {
                invalid(format!(
                    "netrc file {} has no entry for {host}",
                    file.display()
                ))
            })?;
            Some(Auth::Basic {
                login: entry.login.clone().unwrap_or_default(),
                password: entry.password.clone().unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(Substituter {
            url: trimmed.to_string(),
            base,
            keys,
            configured_priority: config.priority,
            auth,
            info: OnceCell::new(),
        })
    }

    /// The configured priority, else the cache's own, else Nix's default.
    pub fn priority(&self) -> u32 {
        self.configured_priority
            .or_else(|| self.info.get().map(|info| info.priority))
            .unwrap_or(crate::cache_info::DEFAULT_PRIORITY)
    }

    /// `nix-cache-info`, read once per substituter (a failure is not remembered: the next
    /// path tries again).
    pub async fn cache_info(&self, http: &HttpClient) -> Result<&CacheInfo, FetchCause> {
        self.info
            .get_or_try_init(|| async {
                let url = self.join("nix-cache-info")?;
                let body = self.get_small(http, &url, "nix-cache-info").await?;
                let body = body.ok_or_else(|| FetchCause::HttpStatus {
                    url: url.to_string(),
                    status: 404,
                })?;
                let text = String::from_utf8_lossy(&body);
                CacheInfo::parse(&text).map_err(|source| FetchCause::CacheInfo {
                    url: self.url.clone(),
                    source,
                })
            })
            .await
    }

    /// The narinfo of `path`, `None` if this cache does not have it.
    pub async fn narinfo(
        &self,
        http: &HttpClient,
        path: &StorePath,
    ) -> Result<Option<NarInfo>, FetchCause> {
        let url = self.join(&format!("{}.narinfo", path.hash_part()))?;
        let Some(body) = self.get_small(http, &url, "narinfo").await? else {
            return Ok(None);
        };
        NarInfo::parse(&body, path)
            .map(Some)
            .map_err(|source| FetchCause::NarInfo {
                url: url.to_string(),
                source,
            })
    }

    /// Where the NAR of `info` is.
    pub fn nar_url(&self, info: &NarInfo) -> Result<Url, FetchCause> {
        let url = self.join(&info.url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchCause::Transfer {
                url: url.to_string(),
                message: "nar url scheme is not http or https".into(),
            });
        }
        Ok(url)
    }

    pub fn auth(&self) -> Option<(&Auth, &Url)> {
        self.auth.as_ref().map(|auth| (auth, &self.base))
    }

    fn join(&self, relative: &str) -> Result<Url, FetchCause> {
        self.base.join(relative).map_err(|e| FetchCause::Transfer {
            url: format!("{}/{relative}", self.url),
            message: format!("invalid url: {e}"),
        })
    }

    /// GETs a small document with retries; `None` when the cache says it has no such thing.
    async fn get_small(
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
                .map_err(|e| crate::http_client::classify(url.as_str(), &e))?;
            Ok(Some(body.to_vec()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> SubstituterConfig {
        SubstituterConfig {
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn relative_and_absolute_nar_urls_join_below_the_cache() {
        let sub = Substituter::new(&config("http://127.0.0.1:8080/cache/")).unwrap();
        assert_eq!(sub.url, "http://127.0.0.1:8080/cache");
        assert_eq!(
            sub.join("nar/abc.nar.xz").unwrap().as_str(),
            "http://127.0.0.1:8080/cache/nar/abc.nar.xz"
        );
        assert_eq!(
            sub.join("https://cdn.example.org/nar/abc")
                .unwrap()
                .as_str(),
            "https://cdn.example.org/nar/abc"
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_the_url() {
        let error = Substituter::new(&config("file:///srv/cache")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid substituter \"file:///srv/cache\": scheme \"file\" is not supported; use \
             http or https (or backend \"nix-cli\")"
        );
        let mut bad_key = config("https://cache.example.org");
        bad_key.trusted_keys = vec!["nocolon".into()];
        assert!(Substituter::new(&bad_key)
            .unwrap_err()
            .to_string()
            .contains("invalid trusted public key \"nocolon\""));
        let mut missing_token = config("https://cache.example.org");
        missing_token.token_file = Some("/nonexistent/token".into());
        assert!(Substituter::new(&missing_token)
            .unwrap_err()
            .to_string()
            .contains("token file /nonexistent/token"));
    }

    #[test]
    fn credentials_come_from_the_token_or_the_netrc_entry_for_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut with_token = config("https://cache.example.org");
        with_token.token_file = Some(token);
        let sub = Substituter::new(&with_token).unwrap();
        assert_eq!(sub.auth().unwrap().0, &Auth::Bearer("s3cret".into()));

        let netrc = dir.path().join("netrc");
        std::fs::write(&netrc, "machine cache.example.org login u password p\n").unwrap();
        let mut with_netrc = config("https://cache.example.org");
        with_netrc.netrc_file = Some(netrc.clone());
        let sub = Substituter::new(&with_netrc).unwrap();
        assert_eq!(
            sub.auth().unwrap().0,
            &Auth::Basic {
                login: "u".into(),
                password: "p".into()
            }
        );
        let mut other_host = config("https://other.example.org");
        other_host.netrc_file = Some(netrc);
        assert!(Substituter::new(&other_host)
            .unwrap_err()
            .to_string()
            .contains("has no entry for other.example.org"));
    }

    #[test]
    fn config_is_strict_toml() {
        let parsed: SubstituterConfig = toml::from_str(
            "url = \"https://cache.nixos.org\"\npriority = 40\n\
             trusted_keys = [\"cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\"]\n",
        )
        .unwrap();
        assert_eq!(parsed.priority, Some(40));
        assert!(toml::from_str::<SubstituterConfig>("url = \"x\"\nkeys = []\n").is_err());
        let cli: SubstituterConfig = toml::from_str(
            "url = \"file:///srv/cache\"\nbackend = \"nix-cli\"\ntimeout_secs = 30\n",
        )
        .unwrap();
        assert_eq!(cli.backend, SubstituterBackend::NixCli);
        assert_eq!(cli.timeout_secs, Some(30));
        assert!(!cli.build_flakes);
        let builder: SubstituterConfig = toml::from_str(
            "url = \"file:///srv/cache\"\nbackend = \"nix-cli\"\nbuild_flakes = true\n",
        )
        .unwrap();
        assert!(builder.build_flakes);
        let mut http_builder = config("https://cache.example.org");
        http_builder.build_flakes = true;
        assert_eq!(
            Substituter::new(&http_builder).unwrap_err().to_string(),
            "invalid substituter \"https://cache.example.org\": build_flakes applies to backend \
             \"nix-cli\" only (nixlet itself builds nothing)"
        );
        assert!(toml::from_str::<SubstituterConfig>("url = \"x\"\nbackend = \"nix\"\n").is_err());
    }
}
