//! The containerd release that runs on the node, and what follows from it for nixlet: which
//! config schemas it reads, which schema a new file gets, whether its CRI plugin replaces the
//! built-in runtime list, and how it starts shims. Pure: the version itself is found by
//! [`crate::containerd_probe`].
//!
//! Facts checked against containerd's source (`version.ConfigVersion`, `ValidateVersion`) and
//! its binaries here (1.6.20, 1.7.24, 2.1.9, 2.4.0-beta):
//!
//! | containerd | config schemas it reads | nixlet writes a new file as | shims are started with |
//! | ---------- | ----------------------- | --------------------------- | ---------------------- |
//! | 1.6, 1.7   | 1, 2                    | 2                           | flags and stdin options |
//! | 2.0 – 2.2  | 1, 2, 3 (older migrated) | 3                          | flags and stdin options |
//! | 2.3 +      | 1 to 4 (older migrated) | 3 (readable by every 2.x)   | `BootstrapParams`      |

use std::fmt;

use crate::containerd_schema::Schema;

/// The oldest containerd nixlet supports: the shim speaks its bootstrap and task API.
pub const OLDEST_SUPPORTED: (u32, u32) = (1, 6);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdVersion {
    pub major: u32,
    pub minor: u32,
    /// As containerd reports it: `1.6.20~ds1`, `2.1.9+unknown`, `v2.4.0-beta.0-70-g301026e58`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("containerd version {text:?} does not start with MAJOR.MINOR")]
    Unparsable { text: String },
    #[error(
        "containerd {version} is not supported: nixlet supports containerd {}.{} and later",
        OLDEST_SUPPORTED.0,
        OLDEST_SUPPORTED.1
    )]
    Unsupported { version: String },
}

/// How containerd starts a shim, and so how it starts nixlet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// `-namespace`/`-id`/`-address` flags, environment, runtime options on stdin; the shim
    /// answers with an address (1.6) or a JSON result (1.7 to 2.2).
    Legacy,
    /// A protobuf `BootstrapParams` on stdin, a `BootstrapResult` back (containerd 2.3+).
    BootstrapParams,
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bootstrap::Legacy => "legacy flags and stdin options (containerd 1.6 to 2.2)",
            Bootstrap::BootstrapParams => "BootstrapParams on stdin (containerd 2.3 and later)",
        })
    }
}

impl ContainerdVersion {
    /// A version as containerd's version API or `containerd --version` gives it; a leading `v`
    /// and anything after MAJOR.MINOR (patch, Debian suffix, git description) are allowed.
    pub fn parse(text: &str) -> Result<ContainerdVersion, VersionError> {
        let text = text.trim();
        let unparsable = || VersionError::Unparsable {
            text: text.to_string(),
        };
        let mut numbers = text.strip_prefix('v').unwrap_or(text).split('.');
        let mut number = || -> Option<u32> {
            let part = numbers.next()?;
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        let major = number().ok_or_else(unparsable)?;
        let minor = number().ok_or_else(unparsable)?;
        Ok(ContainerdVersion {
            major,
            minor,
            text: text.to_string(),
        })
    }

    /// The version in the output of `containerd --version`: `containerd <module> <version>
    /// [<revision>]`.
    pub fn from_version_output(output: &str) -> Result<ContainerdVersion, VersionError> {
        let words: Vec<&str> = output.split_whitespace().collect();
        match words.as_slice() {
            ["containerd", _module, version, ..] => ContainerdVersion::parse(version),
            _ => Err(VersionError::Unparsable {
                text: output.trim().lines().next().unwrap_or_default().to_string(),
            }),
        }
    }

    pub fn check_supported(&self) -> Result<(), VersionError> {
        if (self.major, self.minor) < OLDEST_SUPPORTED {
            return Err(VersionError::Unsupported {
                version: self.text.clone(),
            });
        }
        Ok(())
    }

    /// The newest config `version` this containerd reads (`version.ConfigVersion`); newer ones
    /// stop it from starting. Releases after the ones nixlet knows are taken to read what 2.3
    /// reads.
    pub fn newest_schema(&self) -> Schema {
        match (self.major, self.minor) {
            (0 | 1, _) => Schema::V2,
            (2, 0..=2) => Schema::V3,
            _ => Schema::V4,
        }
    }

    pub fn reads(&self, schema: Schema) -> bool {
        schema.version() <= self.newest_schema().version()
    }

    /// Whether it reads `schema` without migrating it (and logging so) at every start.
    pub fn reads_natively(&self, schema: Schema) -> bool {
        schema == self.newest_schema()
    }

    /// The schema of a config file nixlet creates. Schema 3 on every 2.x: 2.3 and later read
    /// it (migrating it to 4 with one warning at start), and a node rolled back to 2.0–2.2 still
    /// starts, which it would not with a version 4 file.
    pub fn new_file_schema(&self) -> Schema {
        if self.major <= 1 {
            Schema::V2
        } else {
            Schema::V3
        }
    }

    /// Whether a config that lists any CRI runtime replaces the built-in list (which holds
    /// `runc`) instead of adding to it: containerd 1.x does (checked with `containerd config
    /// dump`); 2.x merges the file's runtimes into its defaults.
    pub fn replaces_runtime_list(&self) -> bool {
        self.major <= 1
    }

    /// Whether a plugin table set by an imported file is merged key by key into the tables of
    /// earlier files (2.x) rather than replacing them whole (1.x, whose `mergeConfig` copies
    /// each plugin's table over; checked with `containerd config dump`).
    pub fn merges_plugin_tables(&self) -> bool {
        self.major >= 2
    }

    /// Whether CRI asks only `io.containerd.runc.v2` runtimes for their features (`-info`:
    /// recursive read-only mounts, user namespaces) and reports none for any other: 2.0 to 2.3.
    /// 1.x has no such features to report and 2.4 asks every runtime.
    pub fn asks_features_only_of_runc_type(&self) -> bool {
        self.major == 2 && self.minor < 4
    }

    pub fn bootstrap(&self) -> Bootstrap {
        if (self.major, self.minor) >= (2, 3) {
            Bootstrap::BootstrapParams
        } else {
            Bootstrap::Legacy
        }
    }

    /// `MAJOR.MINOR`, for messages about a release line.
    pub fn line(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> ContainerdVersion {
        ContainerdVersion::parse(text).unwrap()
    }

    #[test]
    fn every_form_containerd_reports_parses() {
        for (text, major, minor) in [
            ("1.6.20~ds1", 1, 6),
            ("v1.7.24", 1, 7),
            ("2.1.9+unknown", 2, 1),
            ("v2.4.0-beta.0-70-g301026e58", 2, 4),
            ("2.10.0", 2, 10),
        ] {
            let parsed = version(text);
            assert_eq!((parsed.major, parsed.minor), (major, minor), "{text}");
            assert_eq!(parsed.text, text);
        }
        for bad in ["", "v", "2", "two.one", "2.x"] {
            assert_eq!(
                ContainerdVersion::parse(bad),
                Err(VersionError::Unparsable { text: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn version_output_of_each_release_line() {
        for (output, text) in [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                "1.6.20~ds1",
            ),
            (
                "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n",
                "2.1.9+unknown",
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.4.0-beta.0-70-g301026e58 301026e\n",
                "v2.4.0-beta.0-70-g301026e58",
            ),
        ] {
            assert_eq!(
                ContainerdVersion::from_version_output(output).unwrap().text,
                text
            );
        }
        assert!(ContainerdVersion::from_version_output("runc version 1.1.5").is_err());
    }

    #[test]
    fn releases_before_1_6_are_refused_by_name() {
        assert_eq!(
            version("1.5.18").check_supported().unwrap_err().to_string(),
            "containerd 1.5.18 is not supported: nixlet supports containerd 1.6 and later"
        );
        for supported in ["1.6.0", "1.7.24", "2.0.0", "2.4.0", "3.0.0"] {
            assert_eq!(version(supported).check_supported(), Ok(()), "{supported}");
        }
    }

    #[test]
    fn schemas_per_release_line() {
        let cases = [
            ("1.6.20", Schema::V2, Schema::V2, true, Bootstrap::Legacy),
            ("1.7.24", Schema::V2, Schema::V2, true, Bootstrap::Legacy),
            ("2.0.0", Schema::V3, Schema::V3, false, Bootstrap::Legacy),
            ("2.1.9", Schema::V3, Schema::V3, false, Bootstrap::Legacy),
            ("2.2.7", Schema::V3, Schema::V3, false, Bootstrap::Legacy),
            (
                "2.3.0",
                Schema::V4,
                Schema::V3,
                false,
                Bootstrap::BootstrapParams,
            ),
            (
                "2.4.0",
                Schema::V4,
                Schema::V3,
                false,
                Bootstrap::BootstrapParams,
            ),
        ];
        for (text, newest, new_file, replaces, bootstrap) in cases {
            let v = version(text);
            assert_eq!(v.newest_schema(), newest, "{text}");
            assert_eq!(v.new_file_schema(), new_file, "{text}");
            assert!(v.reads(new_file), "{text} reads the files nixlet creates");
            assert!(v.reads(Schema::V2), "{text} reads schema 2");
            assert_eq!(v.replaces_runtime_list(), replaces, "{text}");
            assert_eq!(v.merges_plugin_tables(), !replaces, "{text}");
            assert_eq!(v.bootstrap(), bootstrap, "{text}");
        }
        assert!(!version("1.7.24").reads(Schema::V3));
        assert!(!version("2.2.7").reads(Schema::V4));
        assert!(version("2.3.0").reads(Schema::V4));
    }
}
