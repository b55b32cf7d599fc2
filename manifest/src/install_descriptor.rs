//! One entry of a manifest's `[install]` table: a store path to put into the environment.

use toml::Value;

use crate::manifest::{as_table, wrong_type, ManifestError};
use crate::store_path::StorePath;

/// Flox's default: lower numbers win file collisions.
pub const DEFAULT_PRIORITY: u32 = 5;

/// Descriptor keys of the Flox schema that need the catalog, a lock or Nix; a later version
/// of nixlet will read them.
const NOT_YET_SUPPORTED_KEYS: [&str; 5] = ["pkg-path", "flake", "version", "pkg-group", "outputs"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallDescriptor {
    pub store_path: StorePath,
    /// `None` means every system.
    pub systems: Option<Vec<String>>,
    pub priority: u32,
}

impl InstallDescriptor {
    /// Reads the descriptor of `install_id`, whose value in `[install]` is `value`.
    pub(crate) fn from_toml(install_id: &str, value: &Value) -> Result<Self, ManifestError> {
        if !is_valid_install_id(install_id) {
            return Err(ManifestError::InvalidInstallId(install_id.to_string()));
        }
        let prefix = format!("install.{install_id}");
        let table = as_table(&prefix, value)?;

        // Sorted so that the error for a descriptor with several bad keys is always the same.
        let mut keys: Vec<&String> = table.keys().collect();
        keys.sort();
        for key in keys {
            let full_key = format!("{prefix}.{key}");
            if NOT_YET_SUPPORTED_KEYS.contains(&key.as_str()) {
                return Err(ManifestError::UnsupportedKey(full_key));
            }
            if !matches!(key.as_str(), "store-path" | "systems" | "priority") {
                return Err(ManifestError::UnknownKey(full_key));
            }
        }

        let store_path = match table.get("store-path") {
            None => return Err(ManifestError::MissingStorePath(prefix)),
            Some(Value::String(text)) => {
                StorePath::parse(text).map_err(|source| ManifestError::InvalidStorePath {
                    key: format!("{prefix}.store-path"),
                    source,
                })?
            }
            Some(other) => {
                return Err(wrong_type(
                    &format!("{prefix}.store-path"),
                    "a string",
                    other,
                ))
            }
        };
        let systems = table
            .get("systems")
            .map(|value| read_systems(&format!("{prefix}.systems"), value))
            .transpose()?;
        let priority = table
            .get("priority")
            .map(|value| read_priority(&format!("{prefix}.priority"), value))
            .transpose()?
            .unwrap_or(DEFAULT_PRIORITY);
        Ok(InstallDescriptor {
            store_path,
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

/// Install ids follow Nix attribute-name rules, `[A-Za-z_][A-Za-z0-9_'-]*`, because Flox uses
/// them as attribute names when it builds the environment.
pub fn is_valid_install_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''))
}

fn read_systems(key: &str, value: &Value) -> Result<Vec<String>, ManifestError> {
    let expected = "an array of strings";
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(key, expected, value))?;
    items
        .iter()
        .map(|item| match item {
            Value::String(system) => Ok(system.clone()),
            other => Err(wrong_type(key, expected, other)),
        })
        .collect()
}

fn read_priority(key: &str, value: &Value) -> Result<u32, ManifestError> {
    match value {
        Value::Integer(number) => {
            u32::try_from(*number).map_err(|_| ManifestError::PriorityOutOfRange {
                key: key.to_string(),
                value: *number,
            })
        }
        other => Err(wrong_type(key, "an integer", other)),
    }
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
        InstallDescriptor::from_toml(install_id, &document["d"])
    }

    fn error_of(install_id: &str, inline_table: &str) -> String {
        descriptor(install_id, inline_table)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_store_path_with_defaults() {
        let hello = descriptor("hello", &format!("{{ store-path = \"{HELLO}\" }}")).unwrap();
        assert_eq!(hello.store_path.to_string(), HELLO);
        assert_eq!(hello.systems, None);
        assert_eq!(hello.priority, DEFAULT_PRIORITY);
        assert!(hello.applies_to("aarch64-linux"));
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
        let nowhere = descriptor(
            "hello",
            &format!("{{ store-path = \"{HELLO}\", systems = [] }}"),
        )
        .unwrap();
        assert!(!nowhere.applies_to("x86_64-linux"));
    }

    #[test]
    fn install_ids_follow_nix_attribute_names() {
        for good in ["hello", "_x", "nodejs_20", "python3-pip", "ghc'"] {
            assert!(is_valid_install_id(good), "{good:?}");
        }
        for bad in ["", "1password", "-x", "a.b", "a b", "'x"] {
            assert!(!is_valid_install_id(bad), "{bad:?}");
        }
        assert_eq!(
            error_of("my pkg", &format!("{{ store-path = \"{HELLO}\" }}")),
            "install id \"my pkg\" must start with A-Z a-z or _ and continue with A-Z a-z 0-9 _ \
             - or '"
        );
    }

    #[test]
    fn catalog_and_flake_keys_are_not_supported_yet() {
        for key in NOT_YET_SUPPORTED_KEYS {
            assert_eq!(
                error_of("hello", &format!("{{ {key} = \"x\" }}")),
                format!(
                    "key \"install.hello.{key}\" is not supported yet; nixlet only installs \
                     \"store-path\" descriptors"
                )
            );
        }
    }

    #[test]
    fn unknown_descriptor_keys_are_named() {
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", prio = 1 }}")
            ),
            "unknown key \"install.hello.prio\""
        );
    }

    #[test]
    fn store_path_is_required() {
        assert_eq!(
            error_of("hello", "{ priority = 1 }"),
            "\"install.hello\" has no \"store-path\""
        );
    }

    #[test]
    fn invalid_store_path_names_the_key() {
        let error = descriptor(
            "hello",
            &format!("{{ store-path = \"{HELLO}/bin/hello\" }}"),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "\"install.hello.store-path\": invalid store path \"{HELLO}/bin/hello\": only a \
                 store object itself is allowed, nothing after its name (found \"/bin/hello\")"
            )
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(
            error_of("hello", "{ store-path = 1 }"),
            "\"install.hello.store-path\" must be a string, not integer"
        );
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", systems = \"x86_64-linux\" }}")
            ),
            "\"install.hello.systems\" must be an array of strings, not string"
        );
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", systems = [1] }}")
            ),
            "\"install.hello.systems\" must be an array of strings, not integer"
        );
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", priority = \"high\" }}")
            ),
            "\"install.hello.priority\" must be an integer, not string"
        );
        let document: toml::Table = "d = \"hello\"".parse().unwrap();
        assert_eq!(
            InstallDescriptor::from_toml("hello", &document["d"])
                .unwrap_err()
                .to_string(),
            "\"install.hello\" must be a table, not string"
        );
    }

    #[test]
    fn priority_must_fit() {
        assert_eq!(
            error_of(
                "hello",
                &format!("{{ store-path = \"{HELLO}\", priority = -1 }}")
            ),
            "\"install.hello.priority\" is -1, but a priority must be between 0 and 4294967295"
        );
    }
}
