//! A store path name split into package name and version, by `builtins.parseDrvName`'s rule.
//!
//! Nix (`DrvName::DrvName` in libexpr) cuts at the first `-` that is followed by a character
//! that is not an ASCII letter: `hello-2.12.1` → (`hello`, `2.12.1`), `openssl-3.0.13-dev` →
//! (`openssl`, `3.0.13-dev`), `source` → (`source`, ``). Usually the next character is a digit,
//! but Nix also cuts before `_`, `.` or `+`, and so does this, so that an SBOM names packages
//! exactly as `nix-env` and every Nix tool would.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrvName<'a> {
    pub name: &'a str,
    /// Empty when the name has no version.
    pub version: &'a str,
}

impl<'a> DrvName<'a> {
    pub fn parse(full: &'a str) -> DrvName<'a> {
        let bytes = full.as_bytes();
        for (index, byte) in bytes.iter().enumerate() {
            if *byte == b'-' {
                if let Some(next) = bytes.get(index + 1) {
                    if !next.is_ascii_alphabetic() {
                        return DrvName {
                            name: &full[..index],
                            version: &full[index + 1..],
                        };
                    }
                }
            }
        }
        DrvName {
            name: full,
            version: "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(full: &str) -> (&str, &str) {
        let parsed = DrvName::parse(full);
        (parsed.name, parsed.version)
    }

    #[test]
    fn version_starts_at_the_first_dash_before_a_non_letter() {
        assert_eq!(split("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(split("openssl-3.0.13-dev"), ("openssl", "3.0.13-dev"));
        assert_eq!(split("gcc-wrapper-13.2.0"), ("gcc-wrapper", "13.2.0"));
        assert_eq!(
            split("python3.11-requests-2.31.0"),
            ("python3.11-requests", "2.31.0")
        );
        assert_eq!(split("foo-_bar"), ("foo", "_bar"));
    }

    #[test]
    fn names_without_a_version_keep_it_empty() {
        assert_eq!(split("source"), ("source", ""));
        assert_eq!(split("nixlet-env-acme-web"), ("nixlet-env-acme-web", ""));
        // A trailing dash has nothing after it to start a version.
        assert_eq!(split("weird-"), ("weird-", ""));
    }
}
