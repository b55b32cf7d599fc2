//! `[runtime]`: the runc shim nixlet delegates to, and the runc options it gets.
//!
//! containerd hands a handler's runc options only to a `io.containerd.runc.v2` runtime; for
//! nixlet's handler it sends a wrapper the runc shim refuses. So the runc options the node's
//! runc handler has (the systemd cgroup driver above all, kubeadm's default) are written here,
//! under the same names containerd's config uses, and nixlet hands them to the runc shim at
//! `start` and with every Create. `nixlet node install` copies them from the runc handler.

use serde::Deserialize;

pub const DEFAULT_DELEGATE_SHIM: &str = "containerd-shim-runc-v2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The shim every task RPC is forwarded to.
    pub delegate_shim: String,
    pub runc_options: RuncOptions,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            delegate_shim: DEFAULT_DELEGATE_SHIM.to_string(),
            runc_options: RuncOptions::default(),
        }
    }
}

impl RuntimeConfig {
    /// OCI runtime the runc shim runs (runc, crun, youki, or a path); `None` keeps the runc
    /// shim's own default.
    pub fn binary_name(&self) -> Option<&str> {
        self.runc_options.binary_name.as_deref()
    }
}

/// containerd's runc options (`containerd.runc.v1.Options`), by the names of its config file.
/// Unset keys keep the runc shim's defaults. `CriuPath` (removed in containerd 2.0) is not
/// carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuncOptions {
    #[serde(rename = "BinaryName")]
    pub binary_name: Option<String>,
    #[serde(rename = "Root")]
    pub root: Option<String>,
    #[serde(rename = "SystemdCgroup")]
    pub systemd_cgroup: Option<bool>,
    #[serde(rename = "NoPivotRoot")]
    pub no_pivot_root: Option<bool>,
    #[serde(rename = "NoNewKeyring")]
    pub no_new_keyring: Option<bool>,
    #[serde(rename = "ShimCgroup")]
    pub shim_cgroup: Option<String>,
    #[serde(rename = "IoUid")]
    pub io_uid: Option<u32>,
    #[serde(rename = "IoGid")]
    pub io_gid: Option<u32>,
    #[serde(rename = "CriuImagePath")]
    pub criu_image_path: Option<String>,
    #[serde(rename = "CriuWorkPath")]
    pub criu_work_path: Option<String>,
}

/// The TOML type of one runc option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuncOptionKind {
    Bool,
    String,
    /// An unsigned 32-bit integer (a uid or gid).
    U32,
}

/// Every key of [`RuncOptions`] with its type, for code that copies options from elsewhere
/// (the installer, from containerd's runc handler) and must tell a key nixlet carries from one
/// it does not.
pub const RUNC_OPTION_KEYS: [(&str, RuncOptionKind); 10] = [
    ("BinaryName", RuncOptionKind::String),
    ("Root", RuncOptionKind::String),
    ("SystemdCgroup", RuncOptionKind::Bool),
    ("NoPivotRoot", RuncOptionKind::Bool),
    ("NoNewKeyring", RuncOptionKind::Bool),
    ("ShimCgroup", RuncOptionKind::String),
    ("IoUid", RuncOptionKind::U32),
    ("IoGid", RuncOptionKind::U32),
    ("CriuImagePath", RuncOptionKind::String),
    ("CriuWorkPath", RuncOptionKind::String),
];

/// `[runtime]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuntimeSection {
    /// Shorthand for `runc_options.BinaryName`, kept from before `runc_options` existed.
    binary_name: Option<String>,
    delegate_shim: Option<String>,
    #[serde(default)]
    runc_options: RuncOptions,
}

impl RuntimeSection {
    pub(crate) fn validate(self) -> Result<RuntimeConfig, String> {
        let mut runc_options = self.runc_options;
        match (self.binary_name, &runc_options.binary_name) {
            (Some(short), Some(long)) if &short != long => {
                return Err(format!(
                    "runtime binary_name {short:?} and runtime.runc_options BinaryName {long:?} disagree; keep one"
                ))
            }
            (Some(short), None) => runc_options.binary_name = Some(short),
            _ => {}
        }
        for (key, value) in [
            ("BinaryName", &runc_options.binary_name),
            ("Root", &runc_options.root),
        ] {
            if value.as_deref() == Some("") {
                return Err(format!("runtime runc_options {key} must not be empty"));
            }
        }
        if let Some(root) = &runc_options.root {
            if !root.starts_with('/') {
                return Err(format!(
                    "runtime runc_options Root {root:?} must be an absolute path"
                ));
            }
        }
        let delegate_shim = self
            .delegate_shim
            .unwrap_or_else(|| DEFAULT_DELEGATE_SHIM.to_string());
        if delegate_shim.is_empty() {
            return Err("runtime delegate_shim must not be empty".to_string());
        }
        Ok(RuntimeConfig {
            delegate_shim,
            runc_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<RuntimeConfig, String> {
        toml::from_str::<RuntimeSection>(text)
            .map_err(|error| error.to_string())?
            .validate()
    }

    #[test]
    fn runc_options_use_containerds_names() {
        let config = section(
            r#"
            [runc_options]
            SystemdCgroup = true
            BinaryName = "crun"
            Root = "/run/containerd/runc"
            NoNewKeyring = true
            IoUid = 1000
            "#,
        )
        .unwrap();
        assert_eq!(config.runc_options.systemd_cgroup, Some(true));
        assert_eq!(config.binary_name(), Some("crun"));
        assert_eq!(
            config.runc_options.root.as_deref(),
            Some("/run/containerd/runc")
        );
        assert_eq!(config.runc_options.no_new_keyring, Some(true));
        assert_eq!(config.runc_options.io_uid, Some(1000));
        assert_eq!(config.delegate_shim, DEFAULT_DELEGATE_SHIM);
    }

    #[test]
    fn the_key_list_is_every_option_the_section_reads() {
        for (key, kind) in RUNC_OPTION_KEYS {
            let value = match kind {
                RuncOptionKind::Bool => "true",
                RuncOptionKind::String => "\"/x\"",
                RuncOptionKind::U32 => "7",
            };
            let config = section(&format!("[runc_options]\n{key} = {value}"))
                .unwrap_or_else(|error| panic!("{key}: {error}"));
            assert_ne!(config.runc_options, RuncOptions::default(), "{key}");
        }
        // Ten keys listed, ten fields read: a new field needs its key here too.
        let all = RUNC_OPTION_KEYS
            .iter()
            .map(|(key, kind)| match kind {
                RuncOptionKind::Bool => format!("{key} = true"),
                RuncOptionKind::String => format!("{key} = \"/x\""),
                RuncOptionKind::U32 => format!("{key} = 1"),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let options = section(&format!("[runc_options]\n{all}"))
            .unwrap()
            .runc_options;
        let debug = format!("{options:?}");
        assert!(!debug.contains("None"), "an option no key sets: {debug}");
    }

    #[test]
    fn binary_name_is_a_shorthand_that_must_agree() {
        assert_eq!(
            section(r#"binary_name = "youki""#).unwrap().binary_name(),
            Some("youki")
        );
        let same = section("binary_name = \"crun\"\n[runc_options]\nBinaryName = \"crun\"");
        assert_eq!(same.unwrap().binary_name(), Some("crun"));
        let error =
            section("binary_name = \"crun\"\n[runc_options]\nBinaryName = \"runc\"").unwrap_err();
        assert!(error.contains("disagree"), "{error}");
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        assert!(section("[runc_options]\nSystemdCgroups = true")
            .unwrap_err()
            .contains("SystemdCgroups"));
        assert!(section("[runc_options]\nRoot = \"run/runc\"")
            .unwrap_err()
            .contains("absolute"));
        assert!(section(r#"binary_name = """#)
            .unwrap_err()
            .contains("empty"));
        assert!(section(r#"delegate_shim = """#)
            .unwrap_err()
            .contains("empty"));
    }
}
