//! The node config install writes: the ConfigMap's file when the DaemonSet mounts one (checked
//! with the shim's own parser first, so a typo never reaches the node), the node's own file, or
//! defaults when the node has none; in each case with the runc options of the node's runc handler
//! added where the file does not set them (see [`crate::runc_handler`]).

use std::path::Path;

use nixlet_config::{ConfigError, NodeConfig};
use toml_edit::{DocumentMut, Item, Value};

use crate::names::DEFAULT_ENVIRONMENTS_DIR;
use crate::runc_handler::RuncHandler;

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

/// A node config with the runc handler's options added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithRuncOptions {
    pub text: String,
    /// The options added, as `Key = value`; empty when `text` is the source unchanged.
    pub added: Vec<String>,
}

/// `source` (a node config, under its host path `path`) with every option of `handler` it does
/// not set itself: what the operator wrote wins, the rest follows the node. A source that sets
/// nothing of it comes back byte for byte.
pub fn with_runc_options(
    source: &str,
    path: &Path,
    handler: &RuncHandler,
) -> Result<WithRuncOptions, ConfigError> {
    let unchanged = || WithRuncOptions {
        text: source.to_string(),
        added: Vec::new(),
    };
    if handler.options.is_empty() {
        return Ok(unchanged());
    }
    let mut doc: DocumentMut =
        source
            .parse()
            .map_err(|error: toml_edit::TomlError| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
    let runtime = doc.get("runtime");
    let set = |key: &str| {
        let in_options = runtime
            .and_then(|runtime| runtime.get("runc_options"))
            .and_then(|options| options.get(key))
            .is_some();
        // `binary_name` is the node config's shorthand for BinaryName.
        in_options || (key == "BinaryName" && runtime.and_then(|r| r.get("binary_name")).is_some())
    };
    let missing: Vec<(String, Value)> = handler
        .options
        .iter()
        .filter(|(key, _)| !set(key))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(unchanged());
    }
    let added: Vec<String> = missing
        .iter()
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    let comment = format!(
        "# Copied by `nixlet node install` from containerd's runc handler `{}`, so that nixlet's\n\
         # containers get the node's cgroup driver and runc settings; set a key here to override.\n",
        handler.name
    );
    let options = doc
        .get_mut("runtime")
        .and_then(|runtime| runtime.get_mut("runc_options"));
    let text = match options.and_then(Item::as_table_mut) {
        Some(table) => {
            for (i, (key, value)) in missing.into_iter().enumerate() {
                table.insert(&key, toml_edit::value(value));
                if i == 0 {
                    if let Some(mut key) = table.key_mut(&key) {
                        key.leaf_decor_mut().set_prefix(comment.clone());
                    }
                }
            }
            doc.to_string()
        }
        // No `[runtime.runc_options]` table yet: one at the end reads best and keeps every
        // byte above it. (An inline or dotted `runc_options` makes this text invalid, which the
        // parse below reports.)
        None => {
            let mut text = source.to_string();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&comment);
            text.push_str("[runtime.runc_options]\n");
            for line in &added {
                text.push_str(line);
                text.push('\n');
            }
            text
        }
    };
    validate(&text, path)?;
    Ok(WithRuncOptions { text, added })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_config::SourceConfig;

    const PATH: &str = "/etc/nixlet/config.toml";

    fn handler(options: &[(&str, Value)]) -> RuncHandler {
        RuncHandler {
            name: "runc".into(),
            options: options
                .iter()
                .map(|(key, value)| (key.to_string(), value.clone()))
                .collect(),
            left_out: Vec::new(),
            note: None,
        }
    }

    #[test]
    fn default_config_is_what_the_shim_accepts() {
        let config = validate(&default_text(), Path::new(PATH)).unwrap();
        assert_eq!(config.runtime.binary_name(), None);
        assert_eq!(
            config.sources,
            vec![SourceConfig::Dir {
                root: DEFAULT_ENVIRONMENTS_DIR.into()
            }]
        );
    }

    #[test]
    fn options_are_appended_in_their_own_table() {
        let systemd = handler(&[
            ("SystemdCgroup", Value::from(true)),
            ("Root", Value::from("/run/containerd/runc")),
        ]);
        let out = with_runc_options(&default_text(), Path::new(PATH), &systemd).unwrap();
        assert_eq!(
            out.text,
            format!(
                "{}\n# Copied by `nixlet node install` from containerd's runc handler `runc`, so that nixlet's\n\
                 # containers get the node's cgroup driver and runc settings; set a key here to override.\n\
                 [runtime.runc_options]\nSystemdCgroup = true\nRoot = \"/run/containerd/runc\"\n",
                default_text()
            )
        );
        assert_eq!(
            out.added,
            ["SystemdCgroup = true", "Root = \"/run/containerd/runc\""]
        );
        let config = validate(&out.text, Path::new(PATH)).unwrap();
        assert_eq!(config.runtime.runc_options.systemd_cgroup, Some(true));
        // Idempotent: a second pass finds every key set.
        let again = with_runc_options(&out.text, Path::new(PATH), &systemd).unwrap();
        assert_eq!(again.text, out.text);
        assert!(again.added.is_empty());
    }

    #[test]
    fn what_the_file_sets_wins_and_the_rest_joins_its_table() {
        let source = "[runtime]\nbinary_name = \"crun\"\n\n[runtime.runc_options]\nSystemdCgroup = false # cgroupfs here\n\n[[sources]]\nkind = \"dir\"\nroot = \"/srv/envs\"\n";
        let node = handler(&[
            (
                "BinaryName",
                Value::from("/usr/bin/nvidia-container-runtime"),
            ),
            ("SystemdCgroup", Value::from(true)),
            ("IoUid", Value::from(1000)),
        ]);
        let out = with_runc_options(source, Path::new(PATH), &node).unwrap();
        assert_eq!(out.added, ["IoUid = 1000"]);
        assert_eq!(
            out.text,
            "[runtime]\nbinary_name = \"crun\"\n\n[runtime.runc_options]\nSystemdCgroup = false # cgroupfs here\n\
             # Copied by `nixlet node install` from containerd's runc handler `runc`, so that nixlet's\n\
             # containers get the node's cgroup driver and runc settings; set a key here to override.\n\
             IoUid = 1000\n\n[[sources]]\nkind = \"dir\"\nroot = \"/srv/envs\"\n"
        );
    }

    #[test]
    fn nothing_to_add_leaves_the_bytes_alone() {
        let source = "system = \"x86_64-linux\"";
        let out = with_runc_options(source, Path::new(PATH), &handler(&[])).unwrap();
        assert_eq!(out.text, source);
        let out = with_runc_options(
            "",
            Path::new(PATH),
            &handler(&[("NoPivotRoot", Value::from(true))]),
        )
        .unwrap();
        assert!(out.text.starts_with("# Copied by"), "{}", out.text);
    }

    #[test]
    fn an_inline_runtime_table_is_refused_naming_the_file() {
        let source = "runtime = { delegate_shim = \"containerd-shim-runc-v2\" }\n";
        let error = with_runc_options(
            source,
            Path::new(PATH),
            &handler(&[("SystemdCgroup", Value::from(true))]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains(PATH), "{error}");
    }
}
