//! containerd config schemas: which `version` a file declares and where each one keeps CRI
//! runtimes.
//!
//! Schema 2 is read by containerd 1.x and (migrated on every start) by 2.x; schema 3 by 2.x;
//! schema 4 by 2.3 and later, which moved server settings (`grpc`, `ttrpc` …) into plugins but
//! kept the CRI tables of schema 3. Which of them the node's containerd reads is
//! [`crate::containerd_version`]'s business. A file without `version` is schema 1 to containerd,
//! whose plugin names differ; nixlet refuses to guess there, except for a file with no settings
//! at all (blank), which gets the schema the running containerd wants for a new file.

use std::path::Path;

use toml_edit::{DocumentMut, Item};

use crate::containerd_error::ConfigError;
use crate::names::RUNTIME_NAME;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Schema {
    V2,
    V3,
    V4,
}

/// What a parsed containerd config file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Only comments and whitespace.
    Blank,
    Schema(Schema),
}

impl Schema {
    pub fn version(self) -> i64 {
        match self {
            Schema::V2 => 2,
            Schema::V3 => 3,
            Schema::V4 => 4,
        }
    }

    /// The first containerd release that reads this schema.
    pub fn first_reader(self) -> &'static str {
        match self {
            Schema::V2 => "1.3",
            Schema::V3 => "2.0",
            Schema::V4 => "2.3",
        }
    }

    /// The plugin whose `containerd.runtimes` table lists CRI handlers.
    pub fn cri_runtime_plugin(self) -> &'static str {
        match self {
            Schema::V2 => "io.containerd.grpc.v1.cri",
            Schema::V3 | Schema::V4 => "io.containerd.cri.v1.runtime",
        }
    }

    /// Key path of nixlet's runtime table.
    pub fn runtime_table_path(self) -> [&'static str; 5] {
        [
            "plugins",
            self.cri_runtime_plugin(),
            "containerd",
            "runtimes",
            RUNTIME_NAME,
        ]
    }
}

pub fn parse(text: &str, path: &Path) -> Result<DocumentMut, ConfigError> {
    text.parse::<DocumentMut>()
        .map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
}

pub fn detect(doc: &DocumentMut, path: &Path) -> Result<Detected, ConfigError> {
    match doc.get("version") {
        None if doc.as_table().is_empty() => Ok(Detected::Blank),
        None => Err(ConfigError::SchemaOne {
            path: path.to_path_buf(),
        }),
        Some(item) => match item.as_integer() {
            Some(2) => Ok(Detected::Schema(Schema::V2)),
            Some(3) => Ok(Detected::Schema(Schema::V3)),
            Some(4) => Ok(Detected::Schema(Schema::V4)),
            _ => Err(ConfigError::UnsupportedVersion {
                path: path.to_path_buf(),
                version: item.to_string().trim().to_string(),
            }),
        },
    }
}

/// Whether this file sets anything of the plugin `plugin` (as a table, dotted keys or inline).
pub fn defines_plugin(doc: &DocumentMut, plugin: &str) -> bool {
    doc.get("plugins")
        .and_then(Item::as_table_like)
        .and_then(|plugins| plugins.get(plugin))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_text(text: &str) -> Result<Detected, ConfigError> {
        let path = Path::new("/etc/containerd/config.toml");
        detect(&parse(text, path).unwrap(), path)
    }

    #[test]
    fn versions_two_to_four_are_schemas() {
        for (text, schema) in [
            ("version = 2\n", Schema::V2),
            ("version = 3\n", Schema::V3),
            ("version = 4\n", Schema::V4),
        ] {
            assert_eq!(detect_text(text).unwrap(), Detected::Schema(schema));
            assert_eq!(schema.version().to_string(), text[10..11]);
        }
        assert_eq!(
            Schema::V3.cri_runtime_plugin(),
            Schema::V4.cri_runtime_plugin()
        );
    }

    #[test]
    fn comments_only_is_blank() {
        assert_eq!(detect_text("# nothing here\n\n").unwrap(), Detected::Blank);
        assert_eq!(detect_text("").unwrap(), Detected::Blank);
    }

    #[test]
    fn settings_without_version_are_schema_one_and_refused() {
        let error = detect_text("[plugins.cri]\nsandbox_image = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no `version`"), "{error}");
    }

    #[test]
    fn unknown_version_is_named() {
        let error = detect_text("version = \"2\"\n").unwrap_err().to_string();
        assert_eq!(
            error,
            "containerd config /etc/containerd/config.toml: `version = \"2\"` is not a schema nixlet edits (2, 3 or 4)"
        );
    }

    #[test]
    fn plugin_tables_are_found_in_every_notation() {
        let path = Path::new("c.toml");
        for text in [
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/x\"\n",
            "plugins.\"io.containerd.grpc.v1.cri\".cni.bin_dir = \"/x\"\n",
            "[plugins]\n\"io.containerd.grpc.v1.cri\" = { cni = { bin_dir = \"/x\" } }\n",
        ] {
            let doc = parse(text, path).unwrap();
            assert!(defines_plugin(&doc, "io.containerd.grpc.v1.cri"), "{text}");
            assert!(
                !defines_plugin(&doc, "io.containerd.cri.v1.runtime"),
                "{text}"
            );
        }
    }
}
