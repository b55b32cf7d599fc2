//! One entry of a manifest's `[install]` table: a package from the Flox catalog
//! (`pkg-path`), from a flake (`flake`), or a store path given directly (`store-path`).
//!
//! Catalog and flake descriptors name a package; only the lock knows its store paths, so a
//! descriptor alone is not enough to run anything (see `packages.rs`).

use toml::{Table, Value};

use crate::manifest::ManifestError;
use crate::schema_version::SchemaVersion;
use crate::store_path::StorePath;
use crate::toml_read::{
    as_table, join_key, read_non_empty_string, read_priority, read_string, read_string_array,
    wrong_type,
};

/// Flox's default: lower numbers win file collisions.
pub const DEFAULT_PRIORITY: u32 = 5;

/// What Flox writes for "every output" in `outputs = "all"`.
const ALL_OUTPUTS: &str = "all";

/// The keys that decide a descriptor's kind; exactly one of them must be present.
const SOURCE_KEYS: [&str; 3] = ["pkg-path", "flake", "store-path"];
const CATALOG_KEYS: [&str; 6] = [
    "pkg-path",
    "version",
    "pkg-group",
    "systems",
    "priority",
    "outputs",
];
const FLAKE_KEYS: [&str; 4] = ["flake", "systems", "priority", "outputs"];
const STORE_PATH_KEYS: [&str; 3] = ["store-path", "systems", "priority"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallDescriptor {
    pub source: PackageSource,
    /// `None` means every system.
    pub systems: Option<Vec<String>>,
    /// [`DEFAULT_PRIORITY`] when the manifest gives none.
    pub priority: u32,
}

/// Where a package comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageSource {
    /// A package of the Flox catalog, e.g. `pkg-path = "python312Packages.pip"`.
    Catalog {
        pkg_path: String,
        /// A version or semver range, as written; the lock holds what it resolved to.
        version: Option<String>,
        pkg_group: Option<String>,
        outputs: Option<SelectedOutputs>,
    },
    /// A flake installable, e.g. `flake = "github:jqlang/jq"`.
    Flake {
        flake: String,
        outputs: Option<SelectedOutputs>,
    },
    StorePath(StorePath),
}

/// The `outputs` key of a catalog or flake descriptor: which outputs the user wants to win
/// file collisions (see `outputs.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectedOutputs {
    All,
    /// Never empty.
    Specific(Vec<String>),
}

impl PackageSource {
    /// How the descriptor kind is called in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PackageSource::Catalog { .. } => "catalog",
            PackageSource::Flake { .. } => "flake",
            PackageSource::StorePath(_) => "store-path",
        }
    }

    /// The key that makes a descriptor this kind.
    pub fn kind_key(&self) -> &'static str {
        match self {
            PackageSource::Catalog { .. } => "pkg-path",
            PackageSource::Flake { .. } => "flake",
            PackageSource::StorePath(_) => "store-path",
        }
    }

    /// Catalog and flake descriptors name a package whose store paths only the lock knows.
    pub fn needs_lock(&self) -> bool {
        !matches!(self, PackageSource::StorePath(_))
    }

    pub fn selected_outputs(&self) -> Option<&SelectedOutputs> {
        match self {
            PackageSource::Catalog { outputs, .. } | PackageSource::Flake { outputs, .. } => {
                outputs.as_ref()
            }
            PackageSource::StorePath(_) => None,
        }
    }
}

impl InstallDescriptor {
    /// Reads the descriptor of `install_id`, whose value in `[install]` is `value`, in a
    /// manifest of schema `schema`.
    pub(crate) fn from_toml(
        install_id: &str,
        value: &Value,
        schema: SchemaVersion,
    ) -> Result<Self, ManifestError> {
        if !is_valid_install_id(install_id) {
            return Err(ManifestError::InvalidInstallId(install_id.to_string()));
        }
        let prefix = format!("install.{install_id}");
        let table = as_table(&prefix, value)?;

        let present: Vec<&str> = SOURCE_KEYS
            .into_iter()
            .filter(|key| table.contains_key(*key))
            .collect();
        let (kind, allowed): (&'static str, &[&str]) = match present.as_slice() {
            [only] => match *only {
                "pkg-path" => ("catalog", &CATALOG_KEYS),
                "flake" => ("flake", &FLAKE_KEYS),
                _ => ("store-path", &STORE_PATH_KEYS),
            },
            [] => return Err(ManifestError::MissingPackageSource(prefix)),
            [first, second, ..] => {
                return Err(ManifestError::ConflictingPackageSources {
                    key: prefix,
                    first,
                    second,
                })
            }
        };
        check_descriptor_keys(&prefix, table, kind, allowed)?;
        // `outputs` arrived with schema 1.10.0 (flox repo,
        // cli/flox-manifest/src/parsed/v1_10_0/package_descriptor.rs); flox refuses it in a
        // `version = 1` manifest, whose environments install every output but `stubs`.
        if table.contains_key("outputs") && !schema.selects_outputs() {
            return Err(ManifestError::KeyNeedsNewerSchema {
                key: format!("{prefix}.outputs"),
                since: SchemaVersion::V1_10_0,
                schema,
            });
        }

        let key = |name: &str| join_key(&prefix, name);
        let optional_string = |name: &str| {
            table
                .get(name)
                .map(|value| read_non_empty_string(&key(name), value))
                .transpose()
        };
        let outputs = table
            .get("outputs")
            .map(|value| read_outputs(&key("outputs"), value))
            .transpose()?;
        let source = match kind {
            "catalog" => PackageSource::Catalog {
                pkg_path: read_non_empty_string(&key("pkg-path"), &table["pkg-path"])?,
                version: optional_string("version")?,
                pkg_group: optional_string("pkg-group")?,
                outputs,
            },
            "flake" => PackageSource::Flake {
                flake: read_non_empty_string(&key("flake"), &table["flake"])?,
                outputs,
            },
            _ => {
                let text = read_string(&key("store-path"), &table["store-path"])?;
                let path =
                    StorePath::parse(&text).map_err(|problem| ManifestError::InvalidStorePath {
                        key: key("store-path"),
                        problem,
                    })?;
                PackageSource::StorePath(path)
            }
        };
        let systems = table
            .get("systems")
            .map(|value| read_string_array(&key("systems"), value))
            .transpose()?;
        let priority = table
            .get("priority")
            .map(|value| read_priority(&key("priority"), value))
            .transpose()?
            .unwrap_or(DEFAULT_PRIORITY);
        Ok(InstallDescriptor {
            source,
            systems,
            priority,
        })
    }

    /// Whether this package belongs in the environment on `system` (e.g. `x86_64-linux`).
    pub fn applies_to(&self, system: &str) -> bool {
        match &self.systems {
            None => true,
            Some(systems) => systems.iter().any(|s| s == system),
        }
    }
}

fn check_descriptor_keys(
    prefix: &str,
    table: &Table,
    kind: &'static str,
    allowed: &[&str],
) -> Result<(), ManifestError> {
    let mut unknown: Vec<&String> = table
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(key) => Err(ManifestError::UnknownDescriptorKey {
            key: join_key(prefix, key),
            kind,
            allowed: allowed.join(", "),
        }),
        None => Ok(()),
    }
}

fn read_outputs(key: &str, value: &Value) -> Result<SelectedOutputs, ManifestError> {
    match value {
        Value::String(text) if text == ALL_OUTPUTS => Ok(SelectedOutputs::All),
        Value::String(text) => Err(ManifestError::InvalidOutputs {
            key: key.to_string(),
            found: text.clone(),
        }),
        Value::Array(_) => {
            let names = read_string_array(key, value)?;
            if names.is_empty() {
                return Err(ManifestError::Empty(key.to_string()));
            }
            if let Some(empty) = names.iter().find(|name| name.is_empty()) {
                return Err(ManifestError::InvalidOutputs {
                    key: key.to_string(),
                    found: empty.clone(),
                });
            }
            Ok(SelectedOutputs::Specific(names))
        }
        other => Err(wrong_type(
            key,
            "\"all\" or an array of output names",
            other,
        )),
    }
}

/// Install ids follow Nix attribute-name rules, `[A-Za-z_][A-Za-z0-9_'-]*`, because Flox uses
/// them as attribute names when it builds the environment.
pub fn is_valid_install_id(id: &str) -> bool {
    // Flox's `[install]` is a map from any string (flox repo,
    // cli/flox-manifest/src/parsed/v1_10_0/mod.rs, `Install`), and the CLI itself writes ids
    // such as "flox/flox-mcp-server" for custom catalogs; only what cannot be shown on one
    // log line is refused.
    !id.is_empty() && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";

    fn descriptor(
        install_id: &str,
        inline_table: &str,
    ) -> Result<InstallDescriptor, ManifestError> {
        let document: toml::Table = format!("d = {inline_table}").parse().unwrap();
        InstallDescriptor::from_toml(install_id, &document["d"], SchemaVersion::V1_10_0)
    }

    fn error_of(install_id: &str, inline_table: &str) -> String {
        descriptor(install_id, inline_table)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_store_path_with_defaults() {
        let hello = descriptor("hello", &format!("{{ store-path = \"{HELLO}\" }}")).unwrap();
        assert_eq!(
            hello.source,
            PackageSource::StorePath(StorePath::parse(HELLO).unwrap())
        );
        assert_eq!(hello.systems, None);
        assert_eq!(hello.priority, DEFAULT_PRIORITY);
        assert!(hello.applies_to("aarch64-linux"));
        assert!(!hello.source.needs_lock());
        assert_eq!(hello.source.kind(), "store-path");
    }

    #[test]
    fn reads_a_full_catalog_descriptor() {
        let curl = descriptor(
            "curl",
            r#"{ pkg-path = "curl", version = "^8.7", pkg-group = "net", systems = ["x86_64-linux"], priority = 3, outputs = ["bin", "man"] }"#,
        )
        .unwrap();
        assert_eq!(
            curl,
            InstallDescriptor {
                source: PackageSource::Catalog {
                    pkg_path: "curl".into(),
                    version: Some("^8.7".into()),
                    pkg_group: Some("net".into()),
                    outputs: Some(SelectedOutputs::Specific(vec!["bin".into(), "man".into()])),
                },
                systems: Some(vec!["x86_64-linux".into()]),
                priority: 3,
            }
        );
        assert!(curl.source.needs_lock());
        let all = descriptor("curl", r#"{ pkg-path = "curl", outputs = "all" }"#).unwrap();
        assert_eq!(all.source.selected_outputs(), Some(&SelectedOutputs::All));
    }

    #[test]
    fn reads_a_flake_descriptor() {
        let jq = descriptor(
            "jq",
            r#"{ flake = "github:jqlang/jq", priority = 4, outputs = "all" }"#,
        )
        .unwrap();
        assert_eq!(
            jq.source,
            PackageSource::Flake {
                flake: "github:jqlang/jq".into(),
                outputs: Some(SelectedOutputs::All)
            }
        );
        assert_eq!(jq.priority, 4);
        assert_eq!(jq.source.kind(), "flake");
    }

    #[test]
    fn systems_limit_where_it_applies() {
        let hello = descriptor(
            "hello",
            &format!("{{ store-path = \"{HELLO}\", systems = [\"x86_64-linux\"], priority = 0 }}"),
        )
        .unwrap();
        assert_eq!(hello.priority, 0);
        assert!(hello.applies_to("x86_64-linux"));
        assert!(!hello.applies_to("aarch64-linux"));
        let nowhere = descriptor("hello", "{ pkg-path = \"hello\", systems = [] }").unwrap();
        assert!(!nowhere.applies_to("x86_64-linux"));
    }

    #[test]
    fn install_ids_are_any_string_flox_writes() {
        for good in [
            "hello",
            "nodejs_20",
            "ghc'",
            "1password",
            "python313Packages.anthropic",
            "flox/flox-mcp-server",
            "a b",
        ] {
            assert!(is_valid_install_id(good), "{good:?}");
        }
        for bad in ["", "a\nb", "\t"] {
            assert!(!is_valid_install_id(bad), "{bad:?}");
        }
        assert_eq!(
            error_of("my\npkg", "{ pkg-path = \"hello\" }"),
            "install id \"my\\npkg\" must not be empty nor hold control characters"
        );
    }

    #[test]
    fn a_descriptor_needs_exactly_one_source() {
        assert_eq!(
            error_of("hello", "{ priority = 1 }"),
            "\"install.hello\" needs one of \"pkg-path\", \"flake\" or \"store-path\""
        );
        assert_eq!(
            error_of(
                "hello",
                &format!(
                    "{{ flake = \"github:a/b\", store-path = \"{HELLO}\", pkg-path = \"x\" }}"
                )
            ),
            "\"install.hello\" has both \"pkg-path\" and \"flake\"; a descriptor takes one of them"
        );
    }

    #[test]
    fn unknown_descriptor_keys_are_named_with_the_kind() {
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", prio = 1 }}")
            ),
            "unknown key \"install.hello.prio\" in a store-path descriptor (it takes \
             store-path, systems, priority)"
        );
        assert_eq!(
            error_of("jq", "{ flake = \"github:jqlang/jq\", version = \"1.7\" }"),
            "unknown key \"install.jq.version\" in a flake descriptor (it takes flake, systems, \
             priority, outputs)"
        );
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", outputs = \"all\" }}")
            ),
            "unknown key \"install.hello.outputs\" in a store-path descriptor (it takes \
             store-path, systems, priority)"
        );
        assert_eq!(
            error_of("curl", "{ pkg-path = \"curl\", pkg-grup = \"x\" }"),
            "unknown key \"install.curl.pkg-grup\" in a catalog descriptor (it takes pkg-path, \
             version, pkg-group, systems, priority, outputs)"
        );
    }

    #[test]
    fn invalid_store_path_names_the_key() {
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}/bin/hello\" }}")
            ),
            format!(
                "\"install.hello.store-path\": invalid store path \"{HELLO}/bin/hello\": only a \
                 store object itself is allowed, nothing after its name (found \"/bin/hello\")"
            )
        );
    }

    #[test]
    fn outputs_need_schema_1_10_0() {
        let document: toml::Table = "d = { pkg-path = \"curl\", outputs = \"all\" }"
            .parse()
            .unwrap();
        assert_eq!(
            InstallDescriptor::from_toml("curl", &document["d"], SchemaVersion::V1)
                .unwrap_err()
                .to_string(),
            "\"install.curl.outputs\" needs \"schema-version\" 1.10.0 or later, but this \
             manifest is `version = 1`"
        );
    }

    #[test]
    fn outputs_must_be_all_or_a_list_of_names() {
        assert_eq!(
            error_of("curl", "{ pkg-path = \"curl\", outputs = \"every\" }"),
            "\"install.curl.outputs\" must be \"all\" or an array of output names, found \"every\""
        );
        assert_eq!(
            error_of("curl", "{ pkg-path = \"curl\", outputs = [] }"),
            "\"install.curl.outputs\" must not be empty"
        );
        assert_eq!(
            error_of("curl", "{ pkg-path = \"curl\", outputs = [\"bin\", \"\"] }"),
            "\"install.curl.outputs\" must be \"all\" or an array of output names, found \"\""
        );
        assert_eq!(
            error_of("curl", "{ pkg-path = \"curl\", outputs = 1 }"),
            "\"install.curl.outputs\" must be \"all\" or an array of output names, not integer"
        );
    }

    #[test]
    fn wrong_types_and_empty_values_are_named() {
        assert_eq!(
            error_of("hello", "{ store-path = 1 }"),
            "\"install.hello.store-path\" must be a string, not integer"
        );
        assert_eq!(
            error_of("hello", "{ pkg-path = \"\" }"),
            "\"install.hello.pkg-path\" must not be empty"
        );
        assert_eq!(
            error_of("hello", "{ pkg-path = \"hello\", version = 2 }"),
            "\"install.hello.version\" must be a string, not integer"
        );
        assert_eq!(
            error_of(
                "hello",
                "{ pkg-path = \"hello\", systems = \"x86_64-linux\" }"
            ),
            "\"install.hello.systems\" must be an array of strings, not string"
        );
        assert_eq!(
            error_of("hello", "{ pkg-path = \"hello\", systems = [1] }"),
            "\"install.hello.systems\" must be an array of strings, not integer"
        );
        assert_eq!(
            error_of("hello", "{ pkg-path = \"hello\", priority = \"high\" }"),
            "\"install.hello.priority\" must be an integer, not string"
        );
        let document: toml::Table = "d = \"hello\"".parse().unwrap();
        assert_eq!(
            InstallDescriptor::from_toml("hello", &document["d"], SchemaVersion::V1)
                .unwrap_err()
                .to_string(),
            "\"install.hello\" must be a table, not string"
        );
    }

    #[test]
    fn priority_must_fit() {
        assert_eq!(
            error_of("hello", "{ pkg-path = \"hello\", priority = -1 }"),
            "\"install.hello.priority\" is -1, but a priority must be between 0 and 4294967295"
        );
    }
}
