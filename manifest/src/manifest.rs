//! `manifest.toml`, Flox schema `version = 1`.
//!
//! Every table of the schema is read; what nixlet acts on is typed here, what it accepts but
//! does not act on (`[services]`, `[build]`, `[include]` and a few options) is type-checked
//! where cheap and listed in [`Manifest::ignored`] so that the resolver can log it. Any key the
//! schema does not have is an error naming the full dotted key, as Flox itself refuses them.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::containerize::ContainerizeConfig;
use crate::install_descriptor::InstallDescriptor;
use crate::manifest_json::manifest_json;
use crate::options::Options;
use crate::profile::Profile;
use crate::store_path::StorePathError;
use crate::toml_read::{as_table, check_keys, read_string, wrong_type};
use crate::vars::is_valid_var_name;

const SUPPORTED_VERSION: i64 = 1;

/// Tables nixlet accepts whatever they hold and does not act on: services need a supervisor
/// inside the container, builds happen before an environment is published, and includes are
/// already merged into the lock by Flox.
const IGNORED_TABLES: [&str; 3] = ["services", "build", "include"];
const HOOK_KEYS: [&str; 1] = ["on-activate"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    /// install id → descriptor.
    pub install: BTreeMap<String, InstallDescriptor>,
    /// Variable name → value as written, before `${NAME}` expansion.
    pub vars: BTreeMap<String, String>,
    /// `[hook] on-activate`, as written.
    pub hook_on_activate: Option<String>,
    pub profile: Profile,
    pub options: Options,
    pub containerize: ContainerizeConfig,
    /// Dotted keys accepted but not acted on, sorted, for a log line: e.g. `services`,
    /// `options.allow.unfree`.
    pub ignored: Vec<String>,
    /// The whole manifest as JSON, normalised as in `manifest_json.rs`: what a lock's
    /// `manifest` is compared with.
    pub json: serde_json::Value,
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
    #[error("unknown key {key:?} in a {kind} descriptor (it takes {allowed})")]
    UnknownDescriptorKey {
        key: String,
        kind: &'static str,
        allowed: String,
    },
    #[error("{0:?} must not be empty")]
    Empty(String),
    #[error(
        "install id {0:?} must start with A-Z a-z or _ and continue with A-Z a-z 0-9 _ - or '"
    )]
    InvalidInstallId(String),
    #[error("{0:?} needs one of \"pkg-path\", \"flake\" or \"store-path\"")]
    MissingPackageSource(String),
    #[error("{key:?} has both {first:?} and {second:?}; a descriptor takes one of them")]
    ConflictingPackageSources {
        key: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("{key:?}: {source}")]
    InvalidStorePath {
        key: String,
        #[source]
        source: StorePathError,
    },
    #[error("{key:?} must be \"all\" or an array of output names, found {found:?}")]
    InvalidOutputs { key: String, found: String },
    #[error("{key:?} is {value}, but a priority must be between 0 and 4294967295")]
    PriorityOutOfRange { key: String, value: i64 },
    #[error("var name {0:?} must start with A-Z a-z or _ and continue with A-Z a-z 0-9 or _")]
    InvalidVarName(String),
    #[error("{key:?} must be \"dev\" or \"run\", not {found:?}")]
    InvalidActivateMode { key: String, found: String },
    #[error("{key:?} must be an absolute path, not {found:?}")]
    NotAbsolute { key: String, found: String },
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let document: Table = text.parse()?;
        let version = read_version(&document)?;

        let mut manifest = Manifest {
            version,
            install: BTreeMap::new(),
            vars: BTreeMap::new(),
            hook_on_activate: None,
            profile: Profile::default(),
            options: Options::default(),
            containerize: ContainerizeConfig::default(),
            ignored: Vec::new(),
            json: manifest_json(&document),
        };
        for (key, value) in &document {
            match key.as_str() {
                "version" => {}
                "install" => manifest.install = read_install(value)?,
                "vars" => manifest.vars = read_vars(value)?,
                "hook" => manifest.hook_on_activate = read_hook(value)?,
                "profile" => manifest.profile = Profile::from_toml(value, &mut manifest.ignored)?,
                "options" => manifest.options = Options::from_toml(value, &mut manifest.ignored)?,
                "containerize" => {
                    manifest.containerize =
                        ContainerizeConfig::from_toml(value, &mut manifest.ignored)?
                }
                table if IGNORED_TABLES.contains(&table) => {
                    // Empty tables ask for nothing, and templates write them: not worth a log.
                    if !as_table(table, value)?.is_empty() {
                        manifest.ignored.push(table.to_string());
                    }
                }
                unknown => return Err(ManifestError::UnknownKey(unknown.to_string())),
            }
        }
        manifest.ignored.sort();
        Ok(manifest)
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

fn read_hook(value: &Value) -> Result<Option<String>, ManifestError> {
    let table = as_table("hook", value)?;
    check_keys("hook", table, &HOOK_KEYS)?;
    table
        .get("on-activate")
        .map(|script| read_string("hook.on-activate", script))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install_descriptor::PackageSource;
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
                source: PackageSource::StorePath(StorePath::parse(HELLO).unwrap()),
                systems: None,
                priority: 5,
            }
        );
        assert_eq!(
            manifest.install["curl"],
            InstallDescriptor {
                source: PackageSource::StorePath(StorePath::parse(CURL).unwrap()),
                systems: Some(vec!["x86_64-linux".into()]),
                priority: 3,
            }
        );
        assert_eq!(manifest.vars["GREETING"], "hello from ${HOSTNAME}");
        assert_eq!(manifest.vars["PORT"], "8080");
        assert!(manifest.ignored.is_empty());
    }

    #[test]
    fn parses_every_table_of_the_schema() {
        let manifest = Manifest::parse(
            r#"
            version = 1
            [install]
            hello.pkg-path = "hello"
            [hook]
            on-activate = "export A=1"
            [profile]
            common = "echo common"
            bash = "echo bash"
            [options]
            systems = ["x86_64-linux"]
            activate.mode = "run"
            allow.unfree = true
            [containerize.config]
            cmd = ["hello"]
            working-dir = "/srv"
            user = "app"
            [services.web]
            command = "python3 -m http.server"
            [build.site]
            command = "make"
            [include]
            environments = [{ remote = "acme/base" }]
            "#,
        )
        .unwrap();
        assert_eq!(manifest.hook_on_activate.as_deref(), Some("export A=1"));
        assert_eq!(manifest.profile.common.as_deref(), Some("echo common"));
        assert_eq!(manifest.profile.bash.as_deref(), Some("echo bash"));
        assert_eq!(manifest.options.activate_mode.as_deref(), Some("run"));
        assert_eq!(
            manifest.options.systems,
            Some(vec!["x86_64-linux".to_string()])
        );
        assert_eq!(manifest.containerize.cmd, Some(vec!["hello".to_string()]));
        assert_eq!(manifest.containerize.working_dir.as_deref(), Some("/srv"));
        assert_eq!(manifest.containerize.user.as_deref(), Some("app"));
        assert_eq!(
            manifest.ignored,
            vec!["build", "include", "options.allow.unfree", "services"]
        );
    }

    #[test]
    fn install_and_vars_are_optional() {
        let manifest = Manifest::parse("version = 1").unwrap();
        assert!(manifest.install.is_empty());
        assert!(manifest.vars.is_empty());
        assert_eq!(manifest.hook_on_activate, None);
        assert_eq!(manifest.profile, Profile::default());
    }

    #[test]
    fn accepts_the_empty_tables_flox_init_writes() {
        let text = "version = 1\n[install]\n[vars]\n[hook]\n[profile]\n[options]\n[services]\n\
                    [build]\n[include]\n[containerize]\n";
        let manifest = Manifest::parse(text).unwrap();
        assert!(manifest.ignored.is_empty());
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
    fn unknown_keys_are_named() {
        assert_eq!(
            error_of(&format!(
                "version = 1\n[instal]\nhello.store-path = \"{HELLO}\""
            )),
            "unknown key \"instal\""
        );
        assert_eq!(
            error_of("version = 1\n[hook]\nscript = \"echo hi\""),
            "unknown key \"hook.script\""
        );
    }

    #[test]
    fn ignored_tables_must_still_be_tables() {
        assert_eq!(
            error_of("version = 1\nservices = \"web\""),
            "\"services\" must be a table, not string"
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
        assert_eq!(
            error_of("version = 1\nhook = \"echo\""),
            "\"hook\" must be a table, not string"
        );
        assert_eq!(
            error_of("version = 1\n[hook]\non-activate = 1"),
            "\"hook.on-activate\" must be a string, not integer"
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
            error_of("version = 1\n[install]\nhello.pkg-pth = \"hello\""),
            "\"install.hello\" needs one of \"pkg-path\", \"flake\" or \"store-path\""
        );
    }
}
