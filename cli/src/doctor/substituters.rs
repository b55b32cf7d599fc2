//! Each binary cache in the node config: a trusted key to check its signatures with, and an
//! answer to `nix-cache-info` for `/nix/store`, read with the fetcher's own client.

use std::time::Duration;

use nixlet_config::NodeConfig;
use nixlet_installer::HostRoot;
use nixlet_store::cache_probe::probe_cache_info;
use nixlet_store::signature::TrustedKey;
use nixlet_store::{SubstituterBackend, SubstituterConfig};

use super::report::Report;

const CHECK: &str = "substituter";

pub async fn check(report: &mut Report, host: &HostRoot, config: &NodeConfig, timeout: Duration) {
    if config.substituters.is_empty() {
        report.ok(
            CHECK,
            "none configured: closures must already be in the node's store",
        );
        return;
    }
    for substituter in &config.substituters {
        if !check_keys(report, substituter, config.fetch.require_signatures) {
            // The fetcher refuses the whole entry; probing would only repeat that.
            continue;
        }
        if substituter.backend == SubstituterBackend::NixCli {
            report.ok(
                CHECK,
                format!(
                    "{}: read through the Nix CLI (backend \"nix-cli\"); not probed",
                    substituter.url
                ),
            );
            continue;
        }
        // Credential files are host paths: read them below the host root.
        let mut probed = substituter.clone();
        probed.token_file = probed.token_file.map(|path| host.local(&path));
        probed.netrc_file = probed.netrc_file.map(|path| host.local(&path));
        let local_directory = is_file_url(&probed.url);
        if local_directory {
            // So is a file cache's directory.
            probed.url = below_host_root(host, &probed.url);
        }
        match probe_cache_info(&probed, timeout).await {
            Ok(info) => report.ok(
                CHECK,
                format!(
                    "{} answers nix-cache-info: StoreDir {}, priority {}",
                    substituter.url,
                    info.store_dir,
                    substituter.priority.unwrap_or(info.priority)
                ),
            ),
            Err(error) => report.fail(
                CHECK,
                format!("{}: {error}", substituter.url),
                if local_directory {
                    "check the URL in [[substituters]] and that the directory is there on this \
                     node (mounted, synced): its nix-cache-info must say StoreDir: /nix/store"
                } else {
                    "check the URL in [[substituters]] and that the cache is reachable from this \
                     node (`curl URL/nix-cache-info` must print StoreDir: /nix/store)"
                },
            ),
        }
    }
}

/// False when a key does not parse (the fetcher then refuses the substituter).
fn check_keys(
    report: &mut Report,
    substituter: &SubstituterConfig,
    require_signatures: bool,
) -> bool {
    let url = &substituter.url;
    let bad: Vec<String> = substituter
        .trusted_keys
        .iter()
        .filter_map(|key| TrustedKey::parse(key).err().map(|e| e.to_string()))
        .collect();
    if !bad.is_empty() {
        report.fail(
            CHECK,
            format!("{url}: {}", bad.join("; ")),
            "write each trusted key as `name:base64` exactly as `nix-store \
             --generate-binary-cache-key` printed the public key",
        );
        return false;
    } else if substituter.trusted_keys.is_empty() {
        let message = format!("{url} has no trusted_keys");
        let fix = "add the cache's public key (`name:base64`, from `nix-store \
                   --generate-binary-cache-key`) to its trusted_keys";
        if require_signatures {
            report.fail(
                CHECK,
                format!("{message}: with require_signatures every path from it is refused"),
                fix,
            );
        } else {
            report.warn(
                CHECK,
                format!("{message}: only content-addressed paths can be accepted from it"),
                fix,
            );
        }
    } else {
        report.ok(
            CHECK,
            format!(
                "{url} trusts {}",
                substituter
                    .trusted_keys
                    .iter()
                    .filter_map(|key| key.split_once(':').map(|(name, _)| name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    true
}

/// Only the form the fetcher accepts (`file:///path`); anything else is left for it to refuse.
fn is_file_url(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("file:///"))
}

/// `file:///srv/cache` as seen from the doctor, whose host may be mounted elsewhere.
fn below_host_root(host: &HostRoot, url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|parsed| parsed.to_file_path().ok())
        .and_then(|dir| reqwest::Url::from_file_path(host.local(&dir)).ok())
        .map_or_else(|| url.to_string(), |local| local.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_cache_is_probed_below_the_host_root() {
        let host = HostRoot::new("/host");
        assert!(is_file_url("file:///srv/nix%20cache"));
        assert!(!is_file_url("file://nfs/srv/cache"));
        assert!(!is_file_url("https://cache.example.org"));
        assert_eq!(
            below_host_root(&host, "file:///srv/nix%20cache"),
            "file:///host/srv/nix%20cache"
        );
        assert_eq!(
            below_host_root(&HostRoot::new("/"), "file:///srv/cache"),
            "file:///srv/cache"
        );
    }
}
