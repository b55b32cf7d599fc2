//! `manifest.toml`, Flox schema `version = 1`, as far as nixlet supports it so far:
//! `[install]` entries with a `store-path`, and `[vars]`.
//!
//! The rest of the Flox schema is recognised and refused with "not supported yet" rather than
//! ignored, because running a container without the hook or the packages its author asked for
//! would fail later and more confusingly. Empty tables are accepted: they ask for nothing, and
//! `flox init` writes several of them.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::install_descriptor::InstallDescriptor;
use crate::store_path::StorePathError;
use crate::vars::is_valid_var_name;

const SUPPORTED_VERSION: i64 = 1;

/// Tables of the Flox schema that a later version of nixlet will read.
const NOT_YET_SUPPORTED_TABLES: [&str; 7] = [
    "hook",
    "profile",
    "options",
    "containerize",
    "services",
    "build",
    "include",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    /// install id → descriptor.
    pub install: BTreeMap<String, InstallDescriptor>,
    /// Variable name → value as written, before `${NAME}` expansion.
    pub vars: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid toml: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("manifest has no \"version\"; nixlet reads manifests with `version = 1`")]
    MissingVersion,
    #[error("manifest version {0} is not supported; nixlet reads manifests with `version = 1`")]
    UnsupportedVersion(i64),
    #[error(
        "manifest \"schema-version\" {0:?} is not supported yet; nixlet reads manifests with \
         `version = 1`"
    )]
    UnsupportedSchemaVersion(String),
    #[error("{key:?} must be {expected}, not {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("table [{0}] is not supported yet")]
    UnsupportedTable(String),
    #[error("key {0:?} is not supported yet; nixlet only installs \"store-path\" descriptors")]
    UnsupportedKey(String),
    #[error(
        "install id {0:?} must start with A-Z a-z or _ and continue with A-Z a-z 0-9 _ - or '"
    )]
    InvalidInstallId(String),
    #[error("{0:?} has no \"store-path\"")]
    MissingStorePath(String),
    #[error("{key:?}: {source}")]
    InvalidStorePath {
        key: String,
        #[source]
        source: StorePathError,
    },
    #[error("{key:?} is {value}, but a priority must be between 0 and 4294967295")]
    PriorityOutOfRange { key: String, value: i64 },
    #[error("var name {0:?} must start with A-Z a-z or _ and continue with A-Z a-z 0-9 or _")]
    InvalidVarName(String),
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let document: Table = text.parse()?;
        let version = read_version(&document)?;

        let mut install = BTreeMap::new();
        let mut vars = BTreeMap::new();
        for (key, value) in &document {
            match key.as_str() {
                "version" => {}
                "install" => install = read_install(value)?,
                "vars" => vars = read_vars(value)?,
                table if NOT_YET_SUPPORTED_TABLES.contains(&table) => {
                    if !is_empty_table(value) {
                        return Err(ManifestError::UnsupportedTable(table.to_string()));
                    }
                }
                unknown => return Err(ManifestError::UnknownKey(unknown.to_string())),
            }
        }
        Ok(Manifest {
            version,
            install,
            vars,
        })
    }
}

/// Checked before anything else because another version may mean another schema.
fn read_version(document: &Table) -> Result<u32, ManifestError> {
    match document.get("version") {
        Some(Value::Integer(SUPPORTED_VERSION)) => Ok(SUPPORTED_VERSION as u32),
        Some(Value::Integer(other)) => Err(ManifestError::UnsupportedVersion(*other)),
        Some(other) => Err(wrong_type("version", "an integer", other)),
        // Newer Flox manifests carry a "schema-version" string instead of "version".
        None => match document.get("schema-version") {
            Some(Value::String(schema)) => {
                Err(ManifestError::UnsupportedSchemaVersion(schema.clone()))
            }
            Some(other) => Err(wrong_type("schema-version", "a string", other)),
            None => Err(ManifestError::MissingVersion),
        },
    }
}

fn read_install(value: &Value) -> Result<BTreeMap<String, InstallDescriptor>, ManifestError> {
    let table = as_table("install", value)?;
    table
        .iter()
        .map(|(install_id, descriptor)| {
            InstallDescriptor::from_toml(install_id, descriptor)
                .map(|descriptor| (install_id.clone(), descriptor))
        })
        .collect()
}

fn read_vars(value: &Value) -> Result<BTreeMap<String, String>, ManifestError> {
    let table = as_table("vars", value)?;
    table
        .iter()
        .map(|(name, value)| {
            if !is_valid_var_name(name) {
                return Err(ManifestError::InvalidVarName(name.clone()));
            }
            match value {
                Value::String(text) => Ok((name.clone(), text.clone())),
                other => Err(wrong_type(&format!("vars.{name}"), "a string", other)),
            }
        })
        .collect()
}

fn is_empty_table(value: &Value) -> bool {
    value.as_table().is_some_and(Table::is_empty)
}

pub(crate) fn as_table<'a>(key: &str, value: &'a Value) -> Result<&'a Table, ManifestError> {
    value
        .as_table()
        .ok_or_else(|| wrong_type(key, "a table", value))
}

pub(crate) fn wrong_type(key: &str, expected: &'static str, found: &Value) -> ManifestError {
    ManifestError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_path::StorePath;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";
    const CURL: &str = "/nix/store/1vabdxmxl9pdbzl4kvxflvzs4qhyapq6-curl-8.6.0-bin";

    fn error_of(text: &str) -> String {
        Manifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_store_path_descriptors_and_vars() {
        let text = format!(
            r#"
            version = 1

            [install]
            hello.store-path = "{HELLO}"
            curl = {{ store-path = "{CURL}", systems = ["x86_64-linux"], priority = 3 }}

            [vars]
            GREETING = "hello from ${{HOSTNAME}}"
            PORT = "8080"
            "#
        );
        let manifest = Manifest::parse(&text).unwrap();
        assert_eq!(manifest.version, 1);
        assert_eq!(
            manifest.install["hello"],
            InstallDescriptor {
                store_path: StorePath::parse(HELLO).unwrap(),
                systems: None,
                priority: 5,
            }
        );
        assert_eq!(
            manifest.install["curl"],
            InstallDescriptor {
                store_path: StorePath::parse(CURL).unwrap(),
                systems: Some(vec!["x86_64-linux".into()]),
                priority: 3,
            }
        );
        assert_eq!(manifest.vars["GREETING"], "hello from ${HOSTNAME}");
        assert_eq!(manifest.vars["PORT"], "8080");
    }

    #[test]
    fn install_and_vars_are_optional() {
        let manifest = Manifest::parse("version = 1").unwrap();
        assert!(manifest.install.is_empty());
        assert!(manifest.vars.is_empty());
    }

    #[test]
    fn accepts_the_empty_tables_flox_init_writes() {
        let text = "version = 1\n[install]\n[vars]\n[hook]\n[profile]\n[options]\n";
        assert!(Manifest::parse(text).is_ok());
    }

    #[test]
    fn syntax_errors_keep_line_and_column() {
        let message = error_of("version = 1\n[install\n");
        assert!(
            message.starts_with("manifest is not valid toml: TOML parse error at line 2, column"),
            "{message}"
        );
    }

    #[test]
    fn version_is_required() {
        assert_eq!(
            error_of("[vars]\nA = \"1\""),
            "manifest has no \"version\"; nixlet reads manifests with `version = 1`"
        );
    }

    #[test]
    fn other_versions_are_rejected() {
        assert_eq!(
            error_of("version = 2"),
            "manifest version 2 is not supported; nixlet reads manifests with `version = 1`"
        );
        assert_eq!(
            error_of("version = \"1\""),
            "\"version\" must be an integer, not string"
        );
    }

    #[test]
    fn schema_version_manifests_are_not_supported_yet() {
        assert_eq!(
            error_of("schema-version = \"1.10.0\""),
            "manifest \"schema-version\" \"1.10.0\" is not supported yet; nixlet reads \
             manifests with `version = 1`"
        );
    }

    #[test]
    fn unknown_top_level_keys_are_named() {
        assert_eq!(
            error_of(&format!(
                "version = 1\n[instal]\nhello.store-path = \"{HELLO}\""
            )),
            "unknown key \"instal\""
        );
    }

    #[test]
    fn flox_tables_are_not_supported_yet() {
        for table in NOT_YET_SUPPORTED_TABLES {
            assert_eq!(
                error_of(&format!("version = 1\n[{table}]\nx = \"y\"")),
                format!("table [{table}] is not supported yet")
            );
        }
        assert_eq!(
            error_of("version = 1\n[hook]\non-activate = \"echo hi\""),
            "table [hook] is not supported yet"
        );
    }

    #[test]
    fn tables_of_the_wrong_type_are_named() {
        assert_eq!(
            error_of("version = 1\ninstall = [\"hello\"]"),
            "\"install\" must be a table, not array"
        );
        assert_eq!(
            error_of("version = 1\nvars = 3"),
            "\"vars\" must be a table, not integer"
        );
    }

    #[test]
    fn vars_must_be_strings() {
        assert_eq!(
            error_of("version = 1\n[vars]\nPORT = 8080"),
            "\"vars.PORT\" must be a string, not integer"
        );
    }

    #[test]
    fn var_names_are_checked() {
        assert_eq!(
            error_of("version = 1\n[vars]\n\"MY-VAR\" = \"x\""),
            "var name \"MY-VAR\" must start with A-Z a-z or _ and continue with A-Z a-z 0-9 or _"
        );
    }

    #[test]
    fn descriptor_errors_surface_through_parse() {
        assert_eq!(
            error_of("version = 1\n[install]\nhello.pkg-path = \"hello\""),
            "key \"install.hello.pkg-path\" is not supported yet; nixlet only installs \
             \"store-path\" descriptors"
        );
    }
}
