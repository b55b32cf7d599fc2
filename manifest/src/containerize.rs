//! `[containerize.config]`: the image defaults `flox containerize` writes, of which a pod can
//! use three: `cmd` runs when the container sets no command or args, `working-dir` applies
//! when the pod sets none, and `user` is passed on for the lead's spec rewrite.
//!
//! `exposed-ports`, `volumes`, `labels` and `stop-signal` are accepted, type-checked and
//! ignored: in Kubernetes the pod spec says those things (ports, volumes, labels) or the
//! kubelet decides them (the stop signal).

use toml::Value;

use crate::manifest::ManifestError;
use crate::toml_read::{
    as_table, check_keys, join_key, read_non_empty_string, read_string, read_string_array,
    read_string_table,
};

const CONTAINERIZE_KEYS: [&str; 1] = ["config"];
const CONFIG_KEYS: [&str; 7] = [
    "user",
    "exposed-ports",
    "cmd",
    "volumes",
    "working-dir",
    "labels",
    "stop-signal",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerizeConfig {
    /// Never empty: an empty `cmd` could only start nothing.
    pub cmd: Option<Vec<String>>,
    /// Always absolute, as the OCI runtime requires.
    pub working_dir: Option<String>,
    /// As written: `user`, `uid`, `user:group`, `uid:gid`, …
    pub user: Option<String>,
}

impl ContainerizeConfig {
    /// Reads `[containerize]`, adding the keys it accepts but does not act on to `ignored`.
    pub(crate) fn from_toml(
        value: &Value,
        ignored: &mut Vec<String>,
    ) -> Result<ContainerizeConfig, ManifestError> {
        let table = as_table("containerize", value)?;
        check_keys("containerize", table, &CONTAINERIZE_KEYS)?;
        let Some(config) = table.get("config") else {
            return Ok(ContainerizeConfig::default());
        };
        let prefix = "containerize.config";
        let config = as_table(prefix, config)?;
        check_keys(prefix, config, &CONFIG_KEYS)?;

        let mut result = ContainerizeConfig::default();
        for (name, value) in config {
            let key = join_key(prefix, name);
            match name.as_str() {
                "cmd" => {
                    let cmd = read_string_array(&key, value)?;
                    if cmd.is_empty() {
                        return Err(ManifestError::Empty(key));
                    }
                    result.cmd = Some(cmd);
                }
                "working-dir" => {
                    let dir = read_string(&key, value)?;
                    if !dir.starts_with('/') {
                        return Err(ManifestError::NotAbsolute { key, found: dir });
                    }
                    result.working_dir = Some(dir);
                }
                "user" => result.user = Some(read_non_empty_string(&key, value)?),
                "exposed-ports" | "volumes" => {
                    read_string_array(&key, value)?;
                    ignored.push(key);
                }
                "labels" => {
                    read_string_table(&key, value)?;
                    ignored.push(key);
                }
                _ => {
                    read_string(&key, value)?;
                    ignored.push(key);
                }
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn containerize(text: &str) -> Result<(ContainerizeConfig, Vec<String>), ManifestError> {
        let document: toml::Table = text.parse().unwrap();
        let mut ignored = Vec::new();
        ContainerizeConfig::from_toml(&document["containerize"], &mut ignored)
            .map(|config| (config, ignored))
    }

    fn error_of(text: &str) -> String {
        containerize(text).unwrap_err().to_string()
    }

    #[test]
    fn reads_cmd_working_dir_and_user_and_reports_the_rest() {
        let (config, ignored) = containerize(
            r#"
            [containerize.config]
            cmd = ["python3", "-m", "http.server", ""]
            working-dir = "/srv"
            user = "1000:1000"
            exposed-ports = ["8000/tcp"]
            volumes = ["/data"]
            labels = { "org.opencontainers.image.title" = "web" }
            stop-signal = "SIGINT"
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            ContainerizeConfig {
                cmd: Some(vec![
                    "python3".into(),
                    "-m".into(),
                    "http.server".into(),
                    "".into()
                ]),
                working_dir: Some("/srv".into()),
                user: Some("1000:1000".into()),
            }
        );
        assert_eq!(
            ignored,
            vec![
                "containerize.config.exposed-ports",
                "containerize.config.labels",
                "containerize.config.stop-signal",
                "containerize.config.volumes",
            ]
        );
    }

    #[test]
    fn an_empty_containerize_table_sets_nothing() {
        assert_eq!(
            containerize("[containerize]").unwrap().0,
            ContainerizeConfig::default()
        );
        assert_eq!(
            containerize("[containerize.config]").unwrap().0,
            ContainerizeConfig::default()
        );
    }

    #[test]
    fn malformed_values_are_named() {
        assert_eq!(
            error_of("[containerize.config]\ncmd = \"python3 -m http.server\""),
            "\"containerize.config.cmd\" must be an array of strings, not string"
        );
        assert_eq!(
            error_of("[containerize.config]\ncmd = []"),
            "\"containerize.config.cmd\" must not be empty"
        );
        assert_eq!(
            error_of("[containerize.config]\nworking-dir = \"srv\""),
            "\"containerize.config.working-dir\" must be an absolute path, not \"srv\""
        );
        assert_eq!(
            error_of("[containerize.config]\nuser = \"\""),
            "\"containerize.config.user\" must not be empty"
        );
        assert_eq!(
            error_of("[containerize.config]\nlabels = { a = 1 }"),
            "\"containerize.config.labels.a\" must be a string, not integer"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            error_of("[containerize.config]\nentrypoint = [\"sh\"]"),
            "unknown key \"containerize.config.entrypoint\""
        );
        assert_eq!(
            error_of("[containerize]\nimage = \"x\""),
            "unknown key \"containerize.image\""
        );
    }
}
