//! `[options]`: the systems an environment supports and how it activates.
//!
//! `allow`, `semver` and `cuda-detection` are accepted, type-checked and ignored: the first
//! two steer how Flox resolves packages when it writes the lock, which is done by then, and
//! CUDA detection links the host's GPU driver libraries into a laptop shell, which has no
//! meaning for a container. Each is reported as ignored so that the operator sees it in the
//! shim's log.

use toml::Value;

use crate::activate_mode::ActivateMode;
use crate::manifest::ManifestError;
use crate::schema_version::SchemaVersion;
use crate::toml_read::{as_table, check_keys, join_key, read_bool, read_string, read_string_array};

const ALLOW_KEYS: [&str; 3] = ["unfree", "broken", "licenses"];
/// `prefer-pre-releases` is the Flox 1.0 spelling of `allow-pre-releases`.
const SEMVER_KEYS: [&str; 2] = ["allow-pre-releases", "prefer-pre-releases"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The systems the environment is locked for; `None` means Flox's defaults.
    pub systems: Option<Vec<String>>,
    /// `options.activate.mode`, when the manifest sets it.
    pub activate_mode: Option<ActivateMode>,
}

impl Options {
    /// Reads `[options]`, adding the keys it accepts but does not act on to `ignored`.
    pub(crate) fn from_toml(
        value: &Value,
        schema: SchemaVersion,
        ignored: &mut Vec<String>,
    ) -> Result<Options, ManifestError> {
        let table = as_table("options", value)?;
        check_keys("options", table, schema.options_keys())?;
        let mut options = Options::default();
        for (name, value) in table {
            let key = join_key("options", name);
            match name.as_str() {
                "systems" => options.systems = Some(read_string_array(&key, value)?),
                "allow" => {
                    let allow = as_table(&key, value)?;
                    check_keys(&key, allow, &ALLOW_KEYS)?;
                    for (flag, value) in allow {
                        let flag_key = join_key(&key, flag);
                        match flag.as_str() {
                            "licenses" => drop(read_string_array(&flag_key, value)?),
                            _ => drop(read_bool(&flag_key, value)?),
                        }
                        ignored.push(flag_key);
                    }
                }
                "semver" => {
                    let semver = as_table(&key, value)?;
                    check_keys(&key, semver, &SEMVER_KEYS)?;
                    for (flag, value) in semver {
                        let flag_key = join_key(&key, flag);
                        read_bool(&flag_key, value)?;
                        ignored.push(flag_key);
                    }
                }
                "cuda-detection" => {
                    read_bool(&key, value)?;
                    ignored.push(key);
                }
                // Which catalog stability to resolve from (1.19.0): settled when it was locked.
                "stability" => {
                    read_string(&key, value)?;
                    ignored.push(key);
                }
                _ => {
                    let activate = as_table(&key, value)?;
                    check_keys(&key, activate, schema.activate_keys())?;
                    // 1.18.0: whether the CLI tells about newer generations; not a container's
                    // concern, and its value type is the CLI's to check.
                    if activate.contains_key("upgrade-notifications") {
                        ignored.push(join_key(&key, "upgrade-notifications"));
                    }
                    if let Some(mode) = activate.get("mode") {
                        let mode_key = join_key(&key, "mode");
                        let mode = read_string(&mode_key, mode)?;
                        let parsed =
                            mode.parse()
                                .map_err(|()| ManifestError::InvalidActivateMode {
                                    key: mode_key,
                                    found: mode.clone(),
                                })?;
                        options.activate_mode = Some(parsed);
                    }
                }
            }
        }
        Ok(options)
    }

    /// Whether the environment is meant to run on `system`.
    pub fn supports(&self, system: &str) -> bool {
        match &self.systems {
            None => true,
            Some(systems) => systems.iter().any(|s| s == system),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(text: &str) -> Result<(Options, Vec<String>), ManifestError> {
        let document: toml::Table = format!("[options]\n{text}").parse().unwrap();
        let mut ignored = Vec::new();
        Options::from_toml(&document["options"], SchemaVersion::V1_19_0, &mut ignored)
            .map(|o| (o, ignored))
    }

    fn error_of(text: &str) -> String {
        options(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_systems_and_activate_mode_and_reports_what_it_ignores() {
        let (options, ignored) = options(
            r#"
            systems = ["x86_64-linux", "aarch64-darwin"]
            allow.unfree = true
            allow.broken = false
            allow.licenses = ["MIT"]
            semver.allow-pre-releases = true
            semver.prefer-pre-releases = false
            cuda-detection = false
            activate.mode = "run"
            "#,
        )
        .unwrap();
        assert_eq!(
            options,
            Options {
                systems: Some(vec!["x86_64-linux".into(), "aarch64-darwin".into()]),
                activate_mode: Some(ActivateMode::Run),
            }
        );
        assert!(options.supports("x86_64-linux"));
        assert!(!options.supports("aarch64-linux"));
        assert!(Options::default().supports("aarch64-linux"));
        assert_eq!(
            ignored,
            vec![
                "options.allow.broken",
                "options.allow.licenses",
                "options.allow.unfree",
                "options.cuda-detection",
                "options.semver.allow-pre-releases",
                "options.semver.prefer-pre-releases",
            ]
        );
    }

    #[test]
    fn activate_mode_is_dev_or_run() {
        assert_eq!(
            options("activate.mode = \"dev\"").unwrap().0.activate_mode,
            Some(ActivateMode::Dev)
        );
        assert_eq!(
            error_of("activate.mode = \"prod\""),
            "\"options.activate.mode\" must be \"dev\" or \"run\", not \"prod\""
        );
        assert_eq!(
            error_of("activate.mode = 1"),
            "\"options.activate.mode\" must be a string, not integer"
        );
    }

    #[test]
    fn unknown_keys_are_named_at_every_level() {
        assert_eq!(error_of("sytems = []"), "unknown key \"options.sytems\"");
        assert_eq!(
            error_of("allow.insecure = true"),
            "unknown key \"options.allow.insecure\""
        );
        assert_eq!(
            error_of("semver.pre = true"),
            "unknown key \"options.semver.pre\""
        );
        assert_eq!(
            error_of("activate.shell = \"zsh\""),
            "unknown key \"options.activate.shell\""
        );
    }

    #[test]
    fn ignored_keys_are_still_type_checked() {
        assert_eq!(
            error_of("allow.unfree = \"yes\""),
            "\"options.allow.unfree\" must be a boolean, not string"
        );
        assert_eq!(
            error_of("allow.licenses = \"MIT\""),
            "\"options.allow.licenses\" must be an array of strings, not string"
        );
        assert_eq!(
            error_of("cuda-detection = 1"),
            "\"options.cuda-detection\" must be a boolean, not integer"
        );
        assert_eq!(
            error_of("systems = \"x86_64-linux\""),
            "\"options.systems\" must be an array of strings, not string"
        );
    }
}
