//! A binary cache as configured on the node, and the two small documents read from it
//! (`nix-cache-info`, `<hash>.narinfo`).

use std::path::PathBuf;

use nixlet_manifest::{Netrc, StorePath};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::cache_info::CacheInfo;
use crate::fetch_error::{FetchCause, FetchError};
use crate::file_cache::FileCache;
use crate::http_cache::HttpCache;
use crate::http_client::{Auth, HttpClient};
use crate::nar_source::{NarLocation, NarSource};
use crate::narinfo::NarInfo;
use crate::signature::TrustedKey;

/// One substituter in the node config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubstituterConfig {
    /// `http://` or `https://` base URL of the cache, or `file:///path` of a cache directory on
    /// this node.
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
    /// Who reads the cache: nixlet itself (`http`, the default, for `http`, `https` and `file`
    /// URLs) or, as a fallback when nixlet's own fetch fails, the Nix CLI (`nix-cli`: any store
    /// URL Nix reads, e.g. `s3://`, `ssh://`).
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
    location: CacheLocation,
    pub keys: Vec<TrustedKey>,
    configured_priority: Option<u32>,
    info: OnceCell<CacheInfo>,
}

/// Where the cache's files are read from; nothing else about a substituter depends on it.
#[derive(Debug)]
enum CacheLocation {
    Http(HttpCache),
    File(FileCache),
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
        let keys = config
            .trusted_keys
            .iter()
            .map(|key| TrustedKey::parse(key).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let location = match base.scheme() {
            "http" | "https" => {
                let auth = credentials(config, base.host_str().unwrap_or_default(), invalid)?;
                CacheLocation::Http(HttpCache::new(base, auth))
            }
            "file" => {
                if config.token_file.is_some() || config.netrc_file.is_some() {
                    return Err(invalid(
                        "token_file and netrc_file are for http caches; a file cache is read \
                         with the permissions of nixlet's own process"
                            .into(),
                    ));
                }
                // Untrimmed: `file:///` is the root directory, not `file:`.
                CacheLocation::File(FileCache::from_url(&config.url).map_err(invalid)?)
            }
            scheme => {
                return Err(invalid(format!(
                    "scheme {scheme:?} is not supported; use http, https or file (or backend \
                     \"nix-cli\")"
                )))
            }
        };
        Ok(Substituter {
            url: trimmed.to_string(),
            location,
            keys,
            configured_priority: config.priority,
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
                let body = match &self.location {
                    CacheLocation::Http(cache) => {
                        let url = cache.join("nix-cache-info")?;
                        let body = cache.document(http, &url, "nix-cache-info").await?;
                        body.ok_or_else(|| FetchCause::HttpStatus {
                            url: url.to_string(),
                            status: 404,
                        })?
                    }
                    // Missing is an error here too: the directory is not a cache, or the
                    // share that holds it is not mounted.
                    CacheLocation::File(cache) => cache.read_document("nix-cache-info").await?,
                };
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
        let name = format!("{}.narinfo", path.hash_part());
        let (body, location) = match &self.location {
            CacheLocation::Http(cache) => {
                let url = cache.join(&name)?;
                (
                    cache.document(http, &url, "narinfo").await?,
                    url.to_string(),
                )
            }
            CacheLocation::File(cache) => (
                cache.read_optional_document(&name).await?,
                cache.root().join(&name).display().to_string(),
            ),
        };
        let Some(body) = body else {
            return Ok(None);
        };
        NarInfo::parse(&body, path)
            .map(Some)
            .map_err(|source| FetchCause::NarInfo {
                url: location,
                source,
            })
    }

    /// Where the NAR of `info` is.
    pub fn nar_location(&self, info: &NarInfo) -> Result<NarLocation, FetchCause> {
        match &self.location {
            CacheLocation::Http(cache) => cache.nar_url(&info.url).map(NarLocation::Http),
            CacheLocation::File(cache) => cache.nar_path(&info.url).map(NarLocation::File),
        }
    }

    /// Opens the NAR at `location` (from [`Substituter::nar_location`]) for one attempt.
    pub async fn open_nar(
        &self,
        http: &HttpClient,
        location: &NarLocation,
    ) -> Result<NarSource, FetchCause> {
        match (&self.location, location) {
            (CacheLocation::Http(cache), NarLocation::Http(url)) => {
                cache.open_nar(http, url).await.map(NarSource::Http)
            }
            (CacheLocation::File(cache), NarLocation::File(path)) => {
                let file = cache.open_nar(path).await?;
                Ok(NarSource::File {
                    file,
                    path: path.clone(),
                })
            }
            _ => unreachable!("nar locations come from their own substituter"),
        }
    }

    #[cfg(test)]
    fn auth(&self) -> Option<(&Auth, &Url)> {
        match &self.location {
            CacheLocation::Http(cache) => cache.auth(),
            CacheLocation::File(_) => None,
        }
    }
}

/// An http cache's credentials, from its token file or its host's netrc entry.
fn credentials(
    config: &SubstituterConfig,
    host: &str,
    invalid: impl Fn(String) -> FetchError,
) -> Result<Option<Auth>, FetchError> {
    if config.token_file.is_some() && config.netrc_file.is_some() {
        return Err(invalid(
            "token_file and netrc_file are exclusive: pick one way to authenticate".into(),
        ));
    }
    if let Some(file) = &config.token_file {
        let token = std::fs::read_to_string(file)
            .map_err(|e| invalid(format!("token file {}: {e}", file.display())))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(invalid(format!("token file {} is empty", file.display())));
        }
        return Ok(Some(Auth::Bearer(token.to_string())));
    }
    if let Some(file) = &config.netrc_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| invalid(format!("netrc file {}: {e}", file.display())))?;
        let netrc = Netrc::parse(&text)
            .map_err(|e| invalid(format!("netrc file {}: {e}", file.display())))?;
        let entry = netrc.for_host(host).ok_or_else(|| {
            invalid(format!(
                "netrc file {} has no entry for {host}",
                file.display()
            ))
        })?;
        return Ok(Some(Auth::Basic {
            login: entry.login.clone().unwrap_or_default(),
            password: entry.password.clone().unwrap_or_default(),
        }));
    }
    Ok(None)
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
            nar_location(&sub, "nar/abc.nar.xz").to_string(),
            "http://127.0.0.1:8080/cache/nar/abc.nar.xz"
        );
        assert_eq!(
            nar_location(&sub, "https://cdn.example.org/nar/abc").to_string(),
            "https://cdn.example.org/nar/abc"
        );
    }

    fn nar_location(sub: &Substituter, url: &str) -> NarLocation {
        let info = NarInfo {
            store_path: StorePath::parse(&format!("/nix/store/{}-x", "0".repeat(32))).unwrap(),
            url: url.into(),
            compression: crate::narinfo::Compression::Xz,
            nar_hash: [0; 32],
            nar_size: 1,
            references: Default::default(),
            deriver: None,
            signatures: vec![],
            ca: None,
            file_size: None,
        };
        sub.nar_location(&info).unwrap()
    }

    #[test]
    fn a_file_cache_reads_its_directory_and_nars_below_it() {
        let sub = Substituter::new(&config("file:///srv/nix%20cache/")).unwrap();
        assert_eq!(sub.url, "file:///srv/nix%20cache");
        assert_eq!(
            nar_location(&sub, "nar/abc.nar.xz"),
            NarLocation::File("/srv/nix cache/nar/abc.nar.xz".into())
        );
        assert!(sub.auth().is_none());
        let root = Substituter::new(&config("file:///")).unwrap();
        assert_eq!(
            nar_location(&root, "nar/abc.nar"),
            NarLocation::File("/nar/abc.nar".into())
        );
    }

    #[test]
    fn bad_configs_are_rejected_with_the_url() {
        let error = Substituter::new(&config("s3://nix-cache")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid substituter \"s3://nix-cache\": scheme \"s3\" is not supported; use \
             http, https or file (or backend \"nix-cli\")"
        );
        let error = Substituter::new(&config("file://nfs.example.org/cache")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid substituter \"file://nfs.example.org/cache\": a file cache is a directory \
             of this node, but the URL names the host \"nfs.example.org\"; write \
             file:///absolute/path (three slashes)"
        );
        assert!(Substituter::new(&config("file:srv/cache"))
            .unwrap_err()
            .to_string()
            .contains("the directory \"srv/cache\" is relative"));
        let mut file_with_token = config("file:///srv/cache");
        file_with_token.token_file = Some("/etc/nixlet/token".into());
        assert!(Substituter::new(&file_with_token)
            .unwrap_err()
            .to_string()
            .contains("token_file and netrc_file are for http caches"));
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
