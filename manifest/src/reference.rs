//! The environment reference a pod's annotation carries: `owner/name`, `owner/name:N` or
//! `owner/name@sha256:HEX`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MAX_PART_LEN: usize = 64;
const DIGEST_PREFIX: &str = "sha256:";

/// A reference that passed [`EnvRef::parse`]; its owner and name are safe to use as single
/// path components.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnvRef {
    pub owner: String,
    pub name: String,
    pub selector: Selector,
}

/// Which generation of an environment a reference means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    Latest,
    /// Always at least 1.
    Generation(u64),
    /// The sha256 of the generation's `manifest.lock` bytes: an integrity pin.
    Digest([u8; 32]),
}

/// Longest value an error quotes whole: a pod can carry annotations of a megabyte, and the
/// error goes to containerd's log and Kubernetes Events.
const MAX_QUOTED: usize = 128;

/// `value` quoted and escaped (no raw control character reaches a log), cut to its first
/// [`MAX_QUOTED`] characters.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid environment reference {}: {problem}", quoted(.value))]
pub struct ReferenceError {
    /// The whole value as given.
    pub value: String,
    pub problem: ReferenceProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceProblem {
    #[error("expected \"owner/name\", \"owner/name:GENERATION\" or \"owner/name@sha256:DIGEST\"")]
    MissingSlash,
    #[error("only one '/' is allowed, between owner and name")]
    TooManySlashes,
    #[error(
        "{part} {} must be 1 to 64 characters of A-Z a-z 0-9 . _ - and not \".\" or \"..\"",
        quoted(.text)
    )]
    InvalidPart { part: &'static str, text: String },
    #[error("a generation (':') and a digest ('@') cannot both be given")]
    GenerationAndDigest,
    #[error(
        "generation {} must be a decimal number from 1 up, without sign or leading zeros",
        quoted(.text)
    )]
    InvalidGeneration { text: String },
    #[error("the digest must be written \"sha256:\" followed by 64 lowercase hex characters")]
    UnsupportedDigest,
    #[error("sha256 digest {} must be exactly 64 lowercase hex characters", quoted(.hex))]
    InvalidDigest { hex: String },
}

impl EnvRef {
    pub fn parse(s: &str) -> Result<EnvRef, ReferenceError> {
        parse_parts(s).map_err(|problem| ReferenceError {
            value: s.to_string(),
            problem,
        })
    }

    /// `owner/name` without the selector: how the environment itself is called.
    pub fn owner_and_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

fn parse_parts(s: &str) -> Result<EnvRef, ReferenceProblem> {
    // Owner and name never contain ':' or '@', so the first '@' ends them; a ':' before it
    // means a generation was given as well.
    let (path, selector) = match s.split_once('@') {
        Some((path, _)) if path.contains(':') => return Err(ReferenceProblem::GenerationAndDigest),
        Some((path, digest)) => (path, Selector::Digest(parse_digest(digest)?)),
        None => match s.split_once(':') {
            Some((path, generation)) => (path, Selector::Generation(parse_generation(generation)?)),
            None => (s, Selector::Latest),
        },
    };
    let (owner, name) = path.split_once('/').ok_or(ReferenceProblem::MissingSlash)?;
    if name.contains('/') {
        return Err(ReferenceProblem::TooManySlashes);
    }
    check_part("owner", owner)?;
    check_part("name", name)?;
    Ok(EnvRef {
        owner: owner.to_string(),
        name: name.to_string(),
        selector,
    })
}

fn check_part(part: &'static str, text: &str) -> Result<(), ReferenceProblem> {
    let valid = (1..=MAX_PART_LEN).contains(&text.len())
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ReferenceProblem::InvalidPart {
            part,
            text: text.to_string(),
        })
    }
}

fn parse_generation(text: &str) -> Result<u64, ReferenceProblem> {
    parse_generation_number(text).ok_or_else(|| ReferenceProblem::InvalidGeneration {
        text: text.to_string(),
    })
}

/// A generation number as written in references and generation directory names: decimal,
/// from 1 up. Leading zeros are refused so that each generation has one spelling and Display
/// gives back exactly what was written.
pub(crate) fn parse_generation_number(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && !text.starts_with('0') && text.chars().all(|c| c.is_ascii_digit());
    canonical.then(|| text.parse().ok()).flatten()
}

fn parse_digest(text: &str) -> Result<[u8; 32], ReferenceProblem> {
    let hex = text
        .strip_prefix(DIGEST_PREFIX)
        .ok_or(ReferenceProblem::UnsupportedDigest)?;
    let invalid = || ReferenceProblem::InvalidDigest {
        hex: hex.to_string(),
    };
    // Uppercase is refused so that one digest has one spelling.
    if !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(invalid());
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex, &mut digest).map_err(|_| invalid())?;
    Ok(digest)
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)?;
        match &self.selector {
            Selector::Latest => Ok(()),
            Selector::Generation(generation) => write!(f, ":{generation}"),
            Selector::Digest(digest) => write!(f, "@{DIGEST_PREFIX}{}", hex::encode(digest)),
        }
    }
}

impl FromStr for EnvRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnvRef::parse(s)
    }
}

impl Serialize for EnvRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnvRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EnvRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn error_of(value: &str) -> String {
        EnvRef::parse(value).unwrap_err().to_string()
    }

    #[test]
    fn parses_latest() {
        let reference = EnvRef::parse("acme/web").unwrap();
        assert_eq!(
            reference,
            EnvRef {
                owner: "acme".into(),
                name: "web".into(),
                selector: Selector::Latest
            }
        );
        assert_eq!(reference.owner_and_name(), "acme/web");
    }

    #[test]
    fn parses_a_generation() {
        let reference = EnvRef::parse("acme/web:12").unwrap();
        assert_eq!(reference.selector, Selector::Generation(12));
    }

    #[test]
    fn parses_a_digest() {
        let reference = EnvRef::parse(&format!("acme/web@sha256:{DIGEST_HEX}")).unwrap();
        let Selector::Digest(digest) = reference.selector else {
            panic!("expected a digest, got {:?}", reference.selector);
        };
        assert_eq!(hex::encode(digest), DIGEST_HEX);
    }

    #[test]
    fn display_round_trips_every_form() {
        for text in [
            "acme/web".to_string(),
            "Acme.Corp/web_app-2:7".to_string(),
            format!("a/b@sha256:{DIGEST_HEX}"),
            format!("{}/{}:18446744073709551615", "o".repeat(64), "n".repeat(64)),
        ] {
            let reference: EnvRef = text.parse().unwrap();
            assert_eq!(reference.to_string(), text);
        }
    }

    #[test]
    fn serde_uses_the_reference_string() {
        let reference = EnvRef::parse("acme/web:3").unwrap();
        let value = toml::Value::try_from(&reference).unwrap();
        assert_eq!(value, toml::Value::String("acme/web:3".into()));
        let back: EnvRef = value.try_into().unwrap();
        assert_eq!(back, reference);
    }

    #[test]
    fn rejects_a_value_without_slash() {
        assert_eq!(
            error_of("web"),
            "invalid environment reference \"web\": expected \"owner/name\", \
             \"owner/name:GENERATION\" or \"owner/name@sha256:DIGEST\""
        );
        assert_eq!(
            error_of(""),
            "invalid environment reference \"\": expected \"owner/name\", \
             \"owner/name:GENERATION\" or \"owner/name@sha256:DIGEST\""
        );
    }

    #[test]
    fn rejects_extra_slashes() {
        assert_eq!(
            error_of("acme/web/x"),
            "invalid environment reference \"acme/web/x\": only one '/' is allowed, between \
             owner and name"
        );
    }

    #[test]
    fn rejects_invalid_owner_and_name() {
        assert_eq!(
            error_of("../web"),
            "invalid environment reference \"../web\": owner \"..\" must be 1 to 64 characters \
             of A-Z a-z 0-9 . _ - and not \".\" or \"..\""
        );
        assert_eq!(
            error_of("acme/"),
            "invalid environment reference \"acme/\": name \"\" must be 1 to 64 characters of \
             A-Z a-z 0-9 . _ - and not \".\" or \"..\""
        );
        assert_eq!(
            error_of("acme/web "),
            "invalid environment reference \"acme/web \": name \"web \" must be 1 to 64 \
             characters of A-Z a-z 0-9 . _ - and not \".\" or \"..\""
        );
        for bad in [" acme/web", "acme/.", "/web", "ac me/web", "acmé/web"] {
            assert!(EnvRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}/web", "o".repeat(65));
        assert!(EnvRef::parse(&long).is_err());
    }

    #[test]
    fn rejects_generation_and_digest_together() {
        let value = format!("acme/web:3@sha256:{DIGEST_HEX}");
        assert_eq!(
            error_of(&value),
            format!(
                "invalid environment reference {value:?}: a generation (':') and a digest ('@') \
                 cannot both be given"
            )
        );
        assert!(EnvRef::parse(&format!("acme/web@sha256:{DIGEST_HEX}:3")).is_err());
    }

    #[test]
    fn rejects_invalid_generations() {
        assert_eq!(
            error_of("acme/web:0"),
            "invalid environment reference \"acme/web:0\": generation \"0\" must be a decimal \
             number from 1 up, without sign or leading zeros"
        );
        for bad in [
            "acme/web:",
            "acme/web:+1",
            "acme/web:-1",
            "acme/web:01",
            "acme/web:1.0",
            "acme/web: 1",
            "acme/web:1:2",
            "acme/web:18446744073709551616",
        ] {
            assert!(EnvRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rejects_a_digest_that_is_not_sha256() {
        assert_eq!(
            error_of("acme/web@md5:abc"),
            "invalid environment reference \"acme/web@md5:abc\": the digest must be written \
             \"sha256:\" followed by 64 lowercase hex characters"
        );
        assert!(EnvRef::parse("acme/web@").is_err());
    }

    #[test]
    fn rejects_malformed_digests() {
        let upper = DIGEST_HEX.to_uppercase();
        let value = format!("acme/web@sha256:{upper}");
        assert_eq!(
            error_of(&value),
            format!(
                "invalid environment reference {value:?}: sha256 digest {upper:?} must be \
                 exactly 64 lowercase hex characters"
            )
        );
        for bad in [
            format!("acme/web@sha256:{}", &DIGEST_HEX[..63]),
            format!("acme/web@sha256:{DIGEST_HEX}0"),
            format!("acme/web@sha256:{DIGEST_HEX}@sha256:{DIGEST_HEX}"),
            "acme/web@sha256:".to_string(),
        ] {
            assert!(EnvRef::parse(&bad).is_err(), "{bad:?} was accepted");
        }
    }
}
