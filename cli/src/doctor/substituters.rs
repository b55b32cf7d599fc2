//! Each binary cache in the node config: a trusted key to check its signatures with, and an
//! answer to `nix-cache-info` for `/nix/store`, read with the fetcher's own client.

use std::time::Duration;

use nixlet_installer::HostRoot;
use nixlet_shim::config::NodeConfig;
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
                "check the URL in [[substituters]] and that the cache is reachable from this \
                 node (`curl URL/nix-cache-info` must print StoreDir: /nix/store)",
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
