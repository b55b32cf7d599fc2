//! `/etc/nixlet/config.toml`: parsed, validated, and turned into what the shim builds from it.

use std::path::Path;

use nixlet_config::{NodeConfig, SourceConfig};
use nixlet_store::Fetcher;

pub fn node_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match NodeConfig::parse(text, Path::new("/etc/nixlet/config.toml")) {
        Ok(config) => config,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    // What validation promises the rest of nixlet.
    assert!(config.state_dir.is_absolute());
    assert!(config.gc.gcroots_dir.is_absolute());
    assert!(config.gc_roots_dir.starts_with(&config.gc.gcroots_dir));
    assert!(config.mounts.trees_dir.is_absolute());
    assert_ne!(config.gc.interval_secs, Some(0));
    assert!(!config.runtime.delegate_shim.is_empty());
    for source in &config.sources {
        if let SourceConfig::Dir { root } = source {
            assert!(root.is_absolute());
        }
    }
    let _ = config.gc_options(true);
    let _ = config.telemetry_dir();
    let _ = config.runtime.binary_name();
    for source in config.environment_sources() {
        let _ = source.describe();
    }
    // The fetcher checks the substituters (URLs, keys) when the shim builds it. Those naming
    // credential files are left out: reading a file the config names is not parsing.
    let substituters: Vec<_> = config
        .substituters
        .iter()
        .filter(|s| s.token_file.is_none() && s.netrc_file.is_none())
        .cloned()
        .collect();
    if !substituters.is_empty() {
        if let Err(error) = Fetcher::new(substituters, config.fetch_options()) {
            let _ = error.to_string();
        }
    }
}
