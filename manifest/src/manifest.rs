//! `manifest.toml` in every schema Flox writes (`version = 1`, `schema-version = "1.10.0"` to
//! `"1.15.0"`, see `schema_version.rs`), and the copy of it a lock keeps, which is the same
//! document as JSON.
//!
//! Every table of the schema is read; what nixlet acts on is typed here, what it accepts but
//! does not act on (`[services]`, `[build]`, `[include]`, `[plugins]`, `minimum-cli-version`
//! and a few options) is type-checked where cheap and listed in [`Manifest::ignored`] so that
//! the resolver can log it. Any key the schema does not have is an error naming the full dotted
//! key, as Flox itself refuses them (its manifest types are `deny_unknown_fields`).

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::containerize::ContainerizeConfig;
use crate::install_descriptor::InstallDescriptor;
use crate::manifest_json::{manifest_json, normalise};
use crate::options::Options;
use crate::profile::Profile;
use crate::schema_version::{SchemaVersion, KNOWN_SCHEMA_VERSIONS};
use crate::store_path::StorePathError;
use crate::toml_read::{as_table, check_keys, join_key, read_string, wrong_type};
use crate::toml_syntax::TomlSyntax;
use crate::vars::is_valid_var_name;

/// Tables nixlet accepts whatever they hold and does not act on: services need a supervisor
/// inside the container, builds happen before an environment is published, includes are
/// already merged into the lock by Flox, and plugins are data for Flox's own extensions.
const IGNORED_TABLES: [&str; 5] = ["services", "build", "include", "plugins", "pkg-groups"];
const MINIMUM_CLI_VERSION_KEYS: [&str; 2] = ["version", "reason"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub schema: SchemaVersion,
    /// install id → descriptor.
    pub install: BTreeMap<String, InstallDescriptor>,
    /// Variable name → value as written, before `${NAME}` expansion.
    pub vars: BTreeMap<String, String>,
    /// `[hook] on-activate`, as written.
    pub hook_on_activate: Option<String>,
    pub profile: Profile,
    pub options: Options,
    pub containerize: ContainerizeConfig,
    /// Whether `[include] environments` names any environment: the lock then holds the
    /// composition.
    pub includes_environments: bool,
    /// Dotted keys accepted but not acted on, sorted, for a log line: e.g. `services`,
    /// `options.allow.unfree`.
    pub ignored: Vec<String>,
    /// The whole manifest as JSON, normalised as in `manifest_json.rs`: what a lock's
    /// `manifest` is compared with.
    pub json: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    // Not a `source`: the message already carries the parser's, with its line and column.
    #[error("not valid toml: {0}")]
    Syntax(TomlSyntax),
    #[error(
        "manifest has neither \"version\" nor \"schema-version\"; flox writes one of them \
         (`version = 1`, or `schema-version = \"1.10.0\"` and later)"
    )]
    MissingVersion,
    #[error("manifest has both \"version\" and \"schema-version\"; it takes one of them")]
    BothVersions,
    #[error(
        "\"version\" {0} is not a manifest version flox writes; nixlet reads `version = 1` and \
         \"schema-version\" {}", KNOWN_SCHEMA_VERSIONS.join(", ")
    )]
    UnsupportedVersion(i64),
    #[error(
        "\"schema-version\" {0:?} is not supported; nixlet reads `version = 1` and \
         \"schema-version\" {} (a newer flox wrote this manifest: write it with an older \
         schema, or upgrade nixlet)", KNOWN_SCHEMA_VERSIONS.join(", ")
    )]
    UnsupportedSchemaVersion(String),
    #[error(
        "{key:?} needs \"schema-version\" {since} or later, but this manifest is {}",
        schema_name(*.schema)
    )]
    KeyNeedsNewerSchema {
        key: String,
        since: SchemaVersion,
        schema: SchemaVersion,
    },
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
    #[error("install id {0:?} must not be empty nor hold control characters")]
    InvalidInstallId(String),
    #[error("{0:?} needs one of \"pkg-path\", \"flake\" or \"store-path\"")]
    MissingPackageSource(String),
    #[error("{key:?} has both {first:?} and {second:?}; a descriptor takes one of them")]
    ConflictingPackageSources {
        key: String,
        first: &'static str,
        second: &'static str,
    },
    // The store path error is part of this message, so it is not also a `source`: printing the
    // chain would repeat it.
    #[error("{key:?}: {problem}")]
    InvalidStorePath {
        key: String,
        problem: StorePathError,
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
    #[error("{key:?} cannot be read as a manifest: {problem}")]
    NotAManifest { key: String, problem: String },
}

fn schema_name(schema: SchemaVersion) -> String {
    match schema {
        SchemaVersion::V1 => "`version = 1`".to_string(),
        other => format!("\"schema-version\" {other}"),
    }
}

impl Manifest {
    /// Reads the text of a `manifest.toml`.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let document: Table = text
            .parse()
            .map_err(|error| ManifestError::Syntax(TomlSyntax::of(text, &error)))?;
        Manifest::from_document(&document)
    }

    /// Reads a lock's copy of a manifest (`manifest`, or `compose.composer`), which Flox
    /// serialises from the same types as `manifest.toml`. Older CLIs wrote absent values as
    /// `null`; those mean what a missing key means.
    pub fn from_json(value: &serde_json::Value) -> Result<Manifest, ManifestError> {
        let normalised = normalise(value.clone());
        let document = match toml::Value::try_from(&normalised) {
            Ok(Value::Table(table)) => table,
            Ok(other) => return Err(wrong_type("manifest", "an object", &other)),
            Err(error) => {
                return Err(ManifestError::NotAManifest {
                    key: "manifest".to_string(),
                    problem: error.to_string(),
                })
            }
        };
        Manifest::from_document(&document)
    }

    fn from_document(document: &Table) -> Result<Manifest, ManifestError> {
        let schema = SchemaVersion::of_document(document)?;
        let mut manifest = Manifest {
            schema,
            install: BTreeMap::new(),
            vars: BTreeMap::new(),
            hook_on_activate: None,
            profile: Profile::default(),
            options: Options::default(),
            containerize: ContainerizeConfig::default(),
            includes_environments: false,
            ignored: Vec::new(),
            json: manifest_json(document),
        };
        for (key, value) in document {
            if !schema.has_top_level_key(key) {
                return Err(unknown_top_level_key(key, schema));
            }
            match key.as_str() {
                "version" | "schema-version" => {}
                "minimum-cli-version" => {
                    read_minimum_cli_version(value, schema)?;
                    manifest.ignored.push(key.clone());
                }
                "install" => manifest.install = read_install(value, schema)?,
                "vars" => manifest.vars = read_vars(value)?,
                "hook" => {
                    manifest.hook_on_activate = read_hook(value, schema, &mut manifest.ignored)?
                }
                "profile" => {
                    manifest.profile = Profile::from_toml(value, schema, &mut manifest.ignored)?
                }
                "options" => {
                    manifest.options = Options::from_toml(value, schema, &mut manifest.ignored)?
                }
                // Shown by flox and FloxHub only.
                "description" => {
                    read_string(key, value)?;
                }
                "containerize" => {
                    manifest.containerize =
                        ContainerizeConfig::from_toml(value, &mut manifest.ignored)?
                }
                "include" => {
                    manifest.includes_environments = read_include(value)?;
                    if manifest.includes_environments {
                        manifest.ignored.push(key.clone());
                    }
                }
                table => {
                    debug_assert!(IGNORED_TABLES.contains(&table));
                    // Empty tables ask for nothing, and templates write them: not worth a log.
                    if !as_table(table, value)?.is_empty() {
                        manifest.ignored.push(table.to_string());
                    }
                }
            }
        }
        manifest.ignored.sort();
        Ok(manifest)
    }
}

/// A key of a later schema gets an error saying so; anything else is unknown.
fn unknown_top_level_key(key: &str, schema: SchemaVersion) -> ManifestError {
    let since = [
        SchemaVersion::V1_10_0,
        SchemaVersion::V1_14_0,
        SchemaVersion::V1_17_0,
        SchemaVersion::V1_19_0,
    ]
    .into_iter()
    .find(|later| *later > schema && later.has_top_level_key(key));
    match since {
        Some(since) if key != "version" => ManifestError::KeyNeedsNewerSchema {
            key: key.to_string(),
            since,
            schema,
        },
        _ => ManifestError::UnknownKey(key.to_string()),
    }
}

fn read_install(
    value: &Value,
    schema: SchemaVersion,
) -> Result<BTreeMap<String, InstallDescriptor>, ManifestError> {
    let table = as_table("install", value)?;
    table
        .iter()
        .map(|(install_id, descriptor)| {
            InstallDescriptor::from_toml(install_id, descriptor, schema)
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

/// `on-activate`; `on-deactivate` (schema 1.15.0) runs when a shell leaves the environment,
/// which a container's process never does, so it is only type-checked.
fn read_hook(
    value: &Value,
    schema: SchemaVersion,
    ignored: &mut Vec<String>,
) -> Result<Option<String>, ManifestError> {
    let table = as_table("hook", value)?;
    if table.contains_key("on-deactivate") && !schema.hook_keys().contains(&"on-deactivate") {
        return Err(ManifestError::KeyNeedsNewerSchema {
            key: "hook.on-deactivate".to_string(),
            since: SchemaVersion::V1_15_0,
            schema,
        });
    }
    check_keys("hook", table, schema.hook_keys())?;
    if let Some(script) = table.get("on-deactivate") {
        read_string("hook.on-deactivate", script)?;
        ignored.push("hook.on-deactivate".to_string());
    }
    table
        .get("on-activate")
        .map(|script| read_string("hook.on-activate", script))
        .transpose()
}

/// A version string, or (schema 1.11.0 on) `{ version = "…", reason = "…" }`. nixlet is not the
/// flox CLI, so there is no version of its own to compare with.
fn read_minimum_cli_version(value: &Value, schema: SchemaVersion) -> Result<(), ManifestError> {
    let key = "minimum-cli-version";
    match value {
        Value::String(_) => Ok(()),
        Value::Table(table) if schema.minimum_cli_version_may_be_a_table() => {
            check_keys(key, table, &MINIMUM_CLI_VERSION_KEYS)?;
            for (name, item) in table {
                read_string(&join_key(key, name), item)?;
            }
            Ok(())
        }
        other if schema.minimum_cli_version_may_be_a_table() => {
            Err(wrong_type(key, "a string or a table", other))
        }
        other => Err(wrong_type(key, "a string", other)),
    }
}

/// Whether `[include] environments` names any environment.
fn read_include(value: &Value) -> Result<bool, ManifestError> {
    let table = as_table("include", value)?;
    check_keys("include", table, &["environments"])?;
    match table.get("environments") {
        None => Ok(false),
        Some(Value::Array(items)) => Ok(!items.is_empty()),
        Some(other) => Err(wrong_type(
            "include.environments",
            "an array of tables",
            other,
        )),
    }
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
        assert_eq!(manifest.schema, SchemaVersion::V1);
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
        assert_eq!(
            manifest.options.activate_mode,
            Some(crate::activate_mode::ActivateMode::Run)
        );
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
            message.starts_with("not valid toml: line 2, column 9: "),
            "{message}"
        );
    }

    #[test]
    fn version_is_required() {
        assert_eq!(
            error_of("[vars]\nA = \"1\""),
            "manifest has neither \"version\" nor \"schema-version\"; flox writes one of them \
             (`version = 1`, or `schema-version = \"1.10.0\"` and later)"
        );
    }

    #[test]
    fn schema_version_manifests_read_every_key_of_their_schema() {
        let manifest = Manifest::parse(
            r#"
            schema-version = "1.15.0"
            minimum-cli-version = { version = "1.11.0", reason = "needs includes" }
            [install]
            hello = { pkg-path = "hello", outputs = ["out", "man"], pkg-group = "g" }
            [hook]
            on-activate = "export A=1"
            on-deactivate = "echo bye"
            [profile.deactivate]
            common = "echo bye"
            [services]
            auto-start = true
            web.command = "python3 -m http.server"
            [build.site]
            command = "make"
            sandbox-allow = ["net"]
            [plugins.someplugin]
            setting = [1, 2]
            [include]
            environments = [{ remote = "acme/base" }, { dir = "../other", name = "other" }]
            "#,
        )
        .unwrap();
        assert_eq!(manifest.schema, SchemaVersion::V1_15_0);
        assert_eq!(manifest.hook_on_activate.as_deref(), Some("export A=1"));
        assert!(manifest.includes_environments);
        assert_eq!(
            manifest.ignored,
            vec![
                "build",
                "hook.on-deactivate",
                "include",
                "minimum-cli-version",
                "plugins",
                "profile.deactivate",
                "services"
            ]
        );
        let oldest = Manifest::parse(
            "schema-version = \"1.10.0\"\nminimum-cli-version = \"1.10.0\"\n[install]\n\
             hello = { pkg-path = \"hello\", outputs = \"all\" }",
        )
        .unwrap();
        assert_eq!(oldest.schema, SchemaVersion::V1_10_0);
    }

    #[test]
    fn the_newest_schemas_keys_are_accepted_and_ignored() {
        let manifest = Manifest::parse(
            r#"
            schema-version = "1.19.0"
            description = "a web server"
            [pkg-groups.tools]
            stability = "stable"
            [options]
            stability = "stable"
            activate.upgrade-notifications = false
            activate.mode = "run"
            [services.web]
            command = "serve"
            depends-on = ["db"]
            "#,
        )
        .unwrap();
        assert_eq!(manifest.schema, SchemaVersion::V1_19_0);
        assert_eq!(
            manifest.ignored,
            vec![
                "options.activate.upgrade-notifications",
                "options.stability",
                "pkg-groups",
                "services"
            ]
        );
        assert_eq!(
            error_of("schema-version = \"1.18.0\"\n[options]\nstability = \"stable\""),
            "unknown key \"options.stability\""
        );
        assert_eq!(
            error_of("schema-version = \"1.16.0\"\ndescription = \"x\""),
            "\"description\" needs \"schema-version\" 1.17.0 or later, but this manifest is \
             \"schema-version\" 1.16.0"
        );
    }

    #[test]
    fn keys_of_a_later_schema_say_which_schema_they_need() {
        assert_eq!(
            error_of("version = 1\nminimum-cli-version = \"1.10.0\""),
            "\"minimum-cli-version\" needs \"schema-version\" 1.10.0 or later, but this \
             manifest is `version = 1`"
        );
        assert_eq!(
            error_of("schema-version = \"1.13.0\"\n[plugins.a]\nb = 1"),
            "\"plugins\" needs \"schema-version\" 1.14.0 or later, but this manifest is \
             \"schema-version\" 1.13.0"
        );
        assert_eq!(
            error_of("schema-version = \"1.14.0\"\n[hook]\non-deactivate = \"x\""),
            "\"hook.on-deactivate\" needs \"schema-version\" 1.15.0 or later, but this \
             manifest is \"schema-version\" 1.14.0"
        );
        assert_eq!(
            error_of("schema-version = \"1.10.0\"\nminimum-cli-version = { version = \"1\" }"),
            "\"minimum-cli-version\" must be a string, not table"
        );
        assert_eq!(
            error_of("schema-version = \"1.11.0\"\nminimum-cli-version = { versio = \"1\" }"),
            "unknown key \"minimum-cli-version.versio\""
        );
        assert_eq!(
            error_of("schema-version = \"1.10.0\"\nversion = 1"),
            "manifest has both \"version\" and \"schema-version\"; it takes one of them"
        );
        assert_eq!(
            error_of("schema-version = \"1.10.0\"\n[include]\nenvironments = \"acme/base\""),
            "\"include.environments\" must be an array of tables, not string"
        );
    }

    #[test]
    fn a_locks_json_copy_reads_like_the_toml() {
        let text = "schema-version = \"1.12.0\"\n[install]\nhello.pkg-path = \"hello\"\n\
                    [vars]\nA = \"1\"\n[options]\nactivate.mode = \"run\"";
        let from_toml = Manifest::parse(text).unwrap();
        let json = serde_json::json!({
            "schema-version": "1.12.0",
            "install": { "hello": { "pkg-path": "hello", "priority": null } },
            "vars": { "A": "1" },
            "hook": null,
            "options": { "activate": { "mode": "run" }, "allow": {} }
        });
        assert_eq!(Manifest::from_json(&json).unwrap(), from_toml);
        assert_eq!(
            Manifest::from_json(&serde_json::json!({ "version": 1, "vars": { "A": [1, null] } }))
                .unwrap_err()
                .to_string(),
            "\"manifest\" cannot be read as a manifest: unsupported unit type"
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
