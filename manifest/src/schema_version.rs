//! Which manifest schema a `manifest.toml` (or a lock's copy of it) is written in.
//!
//! Flox CLIs up to 1.9 write `version = 1`; from 1.10 they write `schema-version = "1.N.0"`,
//! naming the Flox release that introduced the schema. The set of known versions and what each
//! adds is Flox's `KnownSchemaVersion` and its migrations (flox repo,
//! `cli/flox-manifest/src/parsed/common.rs` and `cli/flox-manifest/src/migrate/`):
//!
//! | schema | adds |
//! | --- | --- |
//! | `1` | the original schema |
//! | `1.10.0` | `schema-version`, `minimum-cli-version`, `outputs` in catalog and flake descriptors |
//! | `1.11.0` | `minimum-cli-version` may be `{ version, reason }` |
//! | `1.12.0` | `[services] auto-start` |
//! | `1.13.0` | `[profile.deactivate]`, `[build.<name>] sandbox-allow` |
//! | `1.14.0` | `[plugins]` |
//! | `1.15.0` | `[hook] on-deactivate` |
//! | `1.16.0` | `[services.<name>] depends-on`, `shutdown.timeout-seconds`, `shutdown.signal` |
//! | `1.17.0` | top-level `description` |
//! | `1.18.0` | `options.activate.upgrade-notifications` |
//! | `1.19.0` | `options.stability`, top-level `[pkg-groups]` |
//!
//! The outputs an environment installs also depend on it: see `outputs.rs`.

use std::fmt;

use toml::{Table, Value};

use crate::manifest::ManifestError;
use crate::toml_read::wrong_type;

/// The schemas nixlet reads, oldest first (the derived order is the schema order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SchemaVersion {
    /// `version = 1`.
    V1,
    V1_10_0,
    V1_11_0,
    V1_12_0,
    V1_13_0,
    V1_14_0,
    V1_15_0,
    V1_16_0,
    V1_17_0,
    V1_18_0,
    V1_19_0,
}

/// Every `schema-version` string nixlet knows, oldest first.
pub const KNOWN_SCHEMA_VERSIONS: [&str; 10] = [
    "1.10.0", "1.11.0", "1.12.0", "1.13.0", "1.14.0", "1.15.0", "1.16.0", "1.17.0", "1.18.0",
    "1.19.0",
];

impl SchemaVersion {
    /// Reads `version` or `schema-version` from a manifest's top level. Checked before anything
    /// else, because the version decides which keys the rest may have.
    pub(crate) fn of_document(document: &Table) -> Result<SchemaVersion, ManifestError> {
        match (document.get("version"), document.get("schema-version")) {
            (Some(_), Some(_)) => Err(ManifestError::BothVersions),
            (Some(Value::Integer(1)), None) => Ok(SchemaVersion::V1),
            (Some(Value::Integer(other)), None) => Err(ManifestError::UnsupportedVersion(*other)),
            (Some(other), None) => Err(wrong_type("version", "an integer", other)),
            (None, Some(Value::String(text))) => SchemaVersion::parse(text),
            (None, Some(other)) => Err(wrong_type("schema-version", "a string", other)),
            (None, None) => Err(ManifestError::MissingVersion),
        }
    }

    fn parse(text: &str) -> Result<SchemaVersion, ManifestError> {
        Ok(match text {
            "1.10.0" => SchemaVersion::V1_10_0,
            "1.11.0" => SchemaVersion::V1_11_0,
            "1.12.0" => SchemaVersion::V1_12_0,
            "1.13.0" => SchemaVersion::V1_13_0,
            "1.14.0" => SchemaVersion::V1_14_0,
            "1.15.0" => SchemaVersion::V1_15_0,
            "1.16.0" => SchemaVersion::V1_16_0,
            "1.17.0" => SchemaVersion::V1_17_0,
            "1.18.0" => SchemaVersion::V1_18_0,
            "1.19.0" => SchemaVersion::V1_19_0,
            other => return Err(ManifestError::UnsupportedSchemaVersion(other.to_string())),
        })
    }

    /// Catalog and flake descriptors may say which `outputs` to install (schema 1.10.0 on); in
    /// `version = 1` every output but `stubs` is installed instead.
    pub fn selects_outputs(self) -> bool {
        self >= SchemaVersion::V1_10_0
    }

    /// Whether the top-level key `key` exists in this schema.
    pub(crate) fn has_top_level_key(self, key: &str) -> bool {
        match key {
            "version" => self == SchemaVersion::V1,
            "schema-version" | "minimum-cli-version" => self >= SchemaVersion::V1_10_0,
            "plugins" => self >= SchemaVersion::V1_14_0,
            "description" => self >= SchemaVersion::V1_17_0,
            "pkg-groups" => self >= SchemaVersion::V1_19_0,
            "install" | "vars" | "hook" | "profile" | "options" | "services" | "build"
            | "containerize" | "include" => true,
            _ => false,
        }
    }

    /// The keys of `[hook]`.
    pub(crate) fn hook_keys(self) -> &'static [&'static str] {
        if self >= SchemaVersion::V1_15_0 {
            &["on-activate", "on-deactivate"]
        } else {
            &["on-activate"]
        }
    }

    /// The keys of `[profile]`.
    pub(crate) fn profile_keys(self) -> &'static [&'static str] {
        if self >= SchemaVersion::V1_13_0 {
            &["common", "bash", "zsh", "fish", "tcsh", "deactivate"]
        } else {
            &["common", "bash", "zsh", "fish", "tcsh"]
        }
    }

    /// The keys of `[options]`.
    pub(crate) fn options_keys(self) -> &'static [&'static str] {
        if self >= SchemaVersion::V1_19_0 {
            &[
                "systems",
                "allow",
                "semver",
                "cuda-detection",
                "activate",
                "stability",
            ]
        } else {
            &["systems", "allow", "semver", "cuda-detection", "activate"]
        }
    }

    /// The keys of `[options.activate]`.
    pub(crate) fn activate_keys(self) -> &'static [&'static str] {
        if self >= SchemaVersion::V1_18_0 {
            &["mode", "upgrade-notifications"]
        } else {
            &["mode"]
        }
    }

    /// `minimum-cli-version` may be a table `{ version, reason }` (1.11.0 on), not only a
    /// string.
    pub(crate) fn minimum_cli_version_may_be_a_table(self) -> bool {
        self >= SchemaVersion::V1_11_0
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SchemaVersion::V1 => "1",
            SchemaVersion::V1_10_0 => "1.10.0",
            SchemaVersion::V1_11_0 => "1.11.0",
            SchemaVersion::V1_12_0 => "1.12.0",
            SchemaVersion::V1_13_0 => "1.13.0",
            SchemaVersion::V1_14_0 => "1.14.0",
            SchemaVersion::V1_15_0 => "1.15.0",
            SchemaVersion::V1_16_0 => "1.16.0",
            SchemaVersion::V1_17_0 => "1.17.0",
            SchemaVersion::V1_18_0 => "1.18.0",
            SchemaVersion::V1_19_0 => "1.19.0",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(text: &str) -> Result<SchemaVersion, String> {
        let document: Table = text.parse().unwrap();
        SchemaVersion::of_document(&document).map_err(|e| e.to_string())
    }

    #[test]
    fn every_known_version_reads_and_displays_as_written() {
        assert_eq!(of("version = 1"), Ok(SchemaVersion::V1));
        for text in KNOWN_SCHEMA_VERSIONS {
            let version = of(&format!("schema-version = \"{text}\"")).unwrap();
            assert_eq!(version.to_string(), text);
            assert!(version.selects_outputs());
        }
        assert!(!SchemaVersion::V1.selects_outputs());
    }

    #[test]
    fn keys_arrive_with_the_schema_that_introduced_them() {
        assert!(!SchemaVersion::V1.has_top_level_key("minimum-cli-version"));
        assert!(SchemaVersion::V1_10_0.has_top_level_key("minimum-cli-version"));
        assert!(!SchemaVersion::V1_13_0.has_top_level_key("plugins"));
        assert!(SchemaVersion::V1_14_0.has_top_level_key("plugins"));
        assert!(!SchemaVersion::V1_10_0.has_top_level_key("version"));
        assert_eq!(SchemaVersion::V1_14_0.hook_keys(), &["on-activate"]);
        assert_eq!(
            SchemaVersion::V1_15_0.hook_keys(),
            &["on-activate", "on-deactivate"]
        );
        assert!(!SchemaVersion::V1_12_0
            .profile_keys()
            .contains(&"deactivate"));
        assert!(SchemaVersion::V1_13_0
            .profile_keys()
            .contains(&"deactivate"));
        assert!(!SchemaVersion::V1_10_0.minimum_cli_version_may_be_a_table());
        assert!(SchemaVersion::V1_11_0.minimum_cli_version_may_be_a_table());
    }

    #[test]
    fn version_errors_name_the_key_and_value() {
        assert_eq!(
            of("[vars]"),
            Err(
                "manifest has neither \"version\" nor \"schema-version\"; flox writes one of \
                 them (`version = 1`, or `schema-version = \"1.10.0\"` and later)"
                    .to_string()
            )
        );
        assert_eq!(
            of("version = 2"),
            Err(
                "\"version\" 2 is not a manifest version flox writes; nixlet reads \
                 `version = 1` and \"schema-version\" 1.10.0, 1.11.0, 1.12.0, 1.13.0, 1.14.0, \
                 1.15.0, 1.16.0, 1.17.0, 1.18.0, 1.19.0"
                    .to_string()
            )
        );
        assert_eq!(
            of("schema-version = \"1.20.0\""),
            Err(
                "\"schema-version\" \"1.20.0\" is not supported; nixlet reads `version = 1` and \
                 \"schema-version\" 1.10.0, 1.11.0, 1.12.0, 1.13.0, 1.14.0, 1.15.0, 1.16.0, \
                 1.17.0, 1.18.0, 1.19.0 (a newer flox wrote this manifest: write it with an older \
                 schema, or upgrade nixlet)"
                    .to_string()
            )
        );
        assert_eq!(
            of("version = 1\nschema-version = \"1.10.0\""),
            Err(
                "manifest has both \"version\" and \"schema-version\"; it takes one of them"
                    .to_string()
            )
        );
        assert_eq!(
            of("version = \"1\""),
            Err("\"version\" must be an integer, not string".to_string())
        );
        assert_eq!(
            of("schema-version = 1.1"),
            Err("\"schema-version\" must be a string, not float".to_string())
        );
    }
}
