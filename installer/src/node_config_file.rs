//! The node config install writes: the ConfigMap's file when the DaemonSet mounts one (checked
//! with the shim's own parser first, so a typo never reaches the node), or defaults when the node
//! has none.

use std::path::Path;

use nixlet_config::{ConfigError, NodeConfig};

use crate::names::DEFAULT_ENVIRONMENTS_DIR;

/// What a node without a config gets: the shim's defaults spelled out, plus the directory
/// source that `nixlet node run` fills.
pub fn default_text() -> String {
    format!(
        r#"# nixlet node config, written by `nixlet node install` because this node had none.
# The shim reads it for every container it creates; see "Node config" in nixlet's README.

[runtime]
# OCI runtime the runc shim runs: runc when unset (containerd's own default), crun or youki.
# binary_name = "crun"
delegate_shim = "containerd-shim-runc-v2"

[[sources]]
kind = "dir"
root = "{DEFAULT_ENVIRONMENTS_DIR}"
"#
    )
}

/// Parses `text` as the shim would, naming `path` in the error.
pub fn validate(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_config::SourceConfig;

    #[test]
    fn default_config_is_what_the_shim_accepts() {
        let config = validate(&default_text(), Path::new("/etc/nixlet/config.toml")).unwrap();
        assert_eq!(config.runtime.binary_name(), None);
        assert_eq!(
            config.sources,
            vec![SourceConfig::Dir {
                root: DEFAULT_ENVIRONMENTS_DIR.into()
            }]
        );
    }
}
