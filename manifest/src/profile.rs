//! `[profile]`: scripts Flox sources in the user's shell at activation, after the hook.
//!
//! Flox runs `common` in every shell and then the script for the shell at hand. Containers
//! run bash, so `common` and `bash` are what nixlet sources; `zsh`, `fish` and `tcsh` are
//! read (and type-checked) only so that a manifest written for laptops is accepted, and are
//! reported as ignored. `[profile.deactivate]` (schema 1.13.0 on) runs when a shell leaves the
//! environment, which a container never does: it is type-checked and ignored too.

use toml::Value;

use crate::manifest::ManifestError;
use crate::schema_version::SchemaVersion;
use crate::toml_read::{as_table, check_keys, join_key, read_string};

const SHELLS: [&str; 5] = ["common", "bash", "zsh", "fish", "tcsh"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub common: Option<String>,
    pub bash: Option<String>,
    pub zsh: Option<String>,
    pub fish: Option<String>,
    pub tcsh: Option<String>,
}

impl Profile {
    /// Reads `[profile]`, adding the scripts no container shell runs to `ignored`.
    pub(crate) fn from_toml(
        value: &Value,
        schema: SchemaVersion,
        ignored: &mut Vec<String>,
    ) -> Result<Profile, ManifestError> {
        let table = as_table("profile", value)?;
        check_keys("profile", table, schema.profile_keys())?;
        if let Some(deactivate) = table.get("deactivate") {
            let key = "profile.deactivate";
            let scripts = as_table(key, deactivate)?;
            check_keys(key, scripts, &SHELLS)?;
            for (shell, script) in scripts {
                read_string(&join_key(key, shell), script)?;
            }
            ignored.push(key.to_string());
        }
        let script = |name: &str| {
            table
                .get(name)
                .map(|value| read_string(&join_key("profile", name), value))
                .transpose()
        };
        for shell in ["zsh", "fish", "tcsh"] {
            if table.contains_key(shell) {
                ignored.push(join_key("profile", shell));
            }
        }
        Ok(Profile {
            common: script("common")?,
            bash: script("bash")?,
            zsh: script("zsh")?,
            fish: script("fish")?,
            tcsh: script("tcsh")?,
        })
    }

    /// The scripts bash sources at activation, in Flox's order (`common`, then `bash`);
    /// blank scripts are left out because sourcing them does nothing.
    pub fn bash_scripts(&self) -> Vec<&str> {
        [&self.common, &self.bash]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .filter(|script| !script.trim().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(text: &str) -> Result<Profile, ManifestError> {
        let document: toml::Table = text.parse().unwrap();
        Profile::from_toml(&document["profile"], SchemaVersion::V1, &mut Vec::new())
    }

    #[test]
    fn reads_every_shell_and_sources_common_then_bash() {
        let profile = profile(
            "[profile]\ncommon = \"echo common\"\nbash = \"echo bash\"\nzsh = \"z\"\nfish = \"f\"\ntcsh = \"t\"",
        )
        .unwrap();
        assert_eq!(profile.zsh.as_deref(), Some("z"));
        assert_eq!(profile.fish.as_deref(), Some("f"));
        assert_eq!(profile.tcsh.as_deref(), Some("t"));
        assert_eq!(profile.bash_scripts(), vec!["echo common", "echo bash"]);
        let document: toml::Table = "[profile]\nfish = \"f\"\nbash = \"b\"".parse().unwrap();
        let mut ignored = Vec::new();
        Profile::from_toml(&document["profile"], SchemaVersion::V1, &mut ignored).unwrap();
        assert_eq!(ignored, vec!["profile.fish"]);
        let document: toml::Table = "[profile.deactivate]\nbash = \"echo bye\"".parse().unwrap();
        let mut ignored = Vec::new();
        Profile::from_toml(&document["profile"], SchemaVersion::V1_13_0, &mut ignored).unwrap();
        assert_eq!(ignored, vec!["profile.deactivate"]);
        assert_eq!(
            Profile::from_toml(&document["profile"], SchemaVersion::V1_12_0, &mut ignored)
                .unwrap_err()
                .to_string(),
            "unknown key \"profile.deactivate\""
        );
        let document: toml::Table = "[profile.deactivate]\nksh = \"x\"".parse().unwrap();
        assert_eq!(
            Profile::from_toml(&document["profile"], SchemaVersion::V1_15_0, &mut ignored)
                .unwrap_err()
                .to_string(),
            "unknown key \"profile.deactivate.ksh\""
        );
    }

    #[test]
    fn blank_scripts_are_not_sourced() {
        let profile = profile("[profile]\ncommon = \"  \\n\"\nbash = \"echo bash\"").unwrap();
        assert_eq!(profile.bash_scripts(), vec!["echo bash"]);
        assert!(Profile::default().bash_scripts().is_empty());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        assert_eq!(
            profile("[profile]\nksh = \"x\"").unwrap_err().to_string(),
            "unknown key \"profile.ksh\""
        );
        assert_eq!(
            profile("[profile]\ncommon = [\"x\"]")
                .unwrap_err()
                .to_string(),
            "\"profile.common\" must be a string, not array"
        );
    }
}
