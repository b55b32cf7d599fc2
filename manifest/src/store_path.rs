//! A validated top-level Nix store path such as
//! `/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const STORE_DIR: &str = "/nix/store";

/// Nix's base-32 alphabet: the digits and lowercase letters without `e`, `o`, `u` and `t`.
const NIX32_ALPHABET: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;
/// Nix refuses longer names so that the whole base name fits in 255 bytes.
const MAX_NAME_LEN: usize = 211;

/// A store object directly below [`STORE_DIR`], held as its base name `<hash>-<name>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    base: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store path {value:?}: {problem}")]
pub struct StorePathError {
    /// What the caller gave, a full path or a base name.
    pub value: String,
    pub problem: StorePathProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathProblem {
    #[error("it does not start with \"/nix/store/\"")]
    NotInStore,
    #[error("only a store object itself is allowed, nothing after its name (found {rest:?})")]
    BelowStoreObject { rest: String },
    #[error("the hash part {hash:?} is not 32 characters of the nix32 alphabet")]
    InvalidHash { hash: String },
    #[error("there is no \"-<name>\" after the 32-character hash")]
    MissingName,
    #[error("the name is {length} characters long, at most 211 are allowed")]
    NameTooLong { length: usize },
    #[error("the name {name:?} starts with '.'")]
    NameStartsWithDot { name: String },
    #[error("the name {name:?} contains {character:?}; only A-Z a-z 0-9 + - . _ ? = are allowed")]
    NameInvalidCharacter { name: String, character: char },
}

impl StorePath {
    /// Parses `/nix/store/<hash>-<name>`; a path inside the store object (`…/bin/hello`) or a
    /// trailing slash is rejected, so every `StorePath` names exactly one store object.
    pub fn parse(full: &str) -> Result<StorePath, StorePathError> {
        let fail = |problem| StorePathError {
            value: full.to_string(),
            problem,
        };
        let base = full
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| fail(StorePathProblem::NotInStore))?;
        if let Some(slash) = base.find('/') {
            return Err(fail(StorePathProblem::BelowStoreObject {
                rest: base[slash..].to_string(),
            }));
        }
        check_base_name(base).map_err(fail)?;
        Ok(StorePath {
            base: base.to_string(),
        })
    }

    /// Parses the base name `<hash>-<name>` alone, as found in narinfo references.
    pub fn from_base_name(base: &str) -> Result<StorePath, StorePathError> {
        check_base_name(base).map_err(|problem| StorePathError {
            value: base.to_string(),
            problem,
        })?;
        Ok(StorePath {
            base: base.to_string(),
        })
    }

    pub fn base_name(&self) -> &str {
        &self.base
    }

    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_LEN]
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(STORE_DIR).join(&self.base)
    }
}

fn check_base_name(base: &str) -> Result<(), StorePathProblem> {
    // Slicing by bytes below is safe only because every accepted character is ASCII.
    let hash_is_valid = base.len() >= HASH_LEN
        && base.is_char_boundary(HASH_LEN)
        && base[..HASH_LEN].chars().all(|c| NIX32_ALPHABET.contains(c));
    if !hash_is_valid {
        let hash: String = base.chars().take_while(|&c| c != '-').collect();
        return Err(StorePathProblem::InvalidHash { hash });
    }
    let name = match base[HASH_LEN..].strip_prefix('-') {
        Some(name) if !name.is_empty() => name,
        Some(_) => return Err(StorePathProblem::MissingName),
        None if base.len() == HASH_LEN => return Err(StorePathProblem::MissingName),
        None => {
            let hash: String = base.chars().take_while(|&c| c != '-').collect();
            return Err(StorePathProblem::InvalidHash { hash });
        }
    };
    if let Some(character) = name.chars().find(|&c| !is_name_character(c)) {
        return Err(StorePathProblem::NameInvalidCharacter {
            name: name.to_string(),
            character,
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathProblem::NameTooLong { length: name.len() });
    }
    if name.starts_with('.') {
        return Err(StorePathProblem::NameStartsWithDot {
            name: name.to_string(),
        });
    }
    Ok(())
}

fn is_name_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._?=".contains(c)
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

impl Serialize for StorePath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StorePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let full = String::deserialize(deserializer)?;
        StorePath::parse(&full).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";
    const HELLO_BASE: &str = "0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";

    fn problem_of(full: &str) -> String {
        StorePath::parse(full).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_store_path_into_its_parts() {
        let path = StorePath::parse(HELLO).unwrap();
        assert_eq!(path.base_name(), HELLO_BASE);
        assert_eq!(path.hash_part(), "0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36");
        assert_eq!(path.name(), "hello-2.12.1");
        assert_eq!(path.to_path_buf(), PathBuf::from(HELLO));
        assert_eq!(path.to_string(), HELLO);
        assert_eq!(HELLO.parse::<StorePath>().unwrap(), path);
    }

    #[test]
    fn base_name_gives_the_same_path() {
        assert_eq!(
            StorePath::from_base_name(HELLO_BASE).unwrap(),
            StorePath::parse(HELLO).unwrap()
        );
    }

    #[test]
    fn accepts_every_allowed_name_character_and_the_longest_name() {
        let odd = "/nix/store/00000000000000000000000000000000-a+b-c.d_e?f=G9";
        assert_eq!(StorePath::parse(odd).unwrap().name(), "a+b-c.d_e?f=G9");
        let longest = format!("/nix/store/{}-{}", "z".repeat(32), "n".repeat(211));
        assert!(StorePath::parse(&longest).is_ok());
    }

    #[test]
    fn rejects_paths_outside_the_store() {
        assert_eq!(
            problem_of("/usr/bin/hello"),
            "invalid store path \"/usr/bin/hello\": it does not start with \"/nix/store/\""
        );
        assert_eq!(
            problem_of("/nix/storefoo"),
            "invalid store path \"/nix/storefoo\": it does not start with \"/nix/store/\""
        );
    }

    #[test]
    fn rejects_anything_after_the_name() {
        assert_eq!(
            problem_of(&format!("{HELLO}/bin/hello")),
            format!(
                "invalid store path \"{HELLO}/bin/hello\": only a store object itself is \
                 allowed, nothing after its name (found \"/bin/hello\")"
            )
        );
        assert_eq!(
            problem_of(&format!("{HELLO}/")),
            format!(
                "invalid store path \"{HELLO}/\": only a store object itself is allowed, \
                 nothing after its name (found \"/\")"
            )
        );
    }

    #[test]
    fn rejects_a_hash_outside_the_nix32_alphabet() {
        // 'e' is not in the nix32 alphabet.
        let value = "/nix/store/ec0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello";
        assert_eq!(
            problem_of(value),
            format!(
                "invalid store path {value:?}: the hash part \
                 \"ec0ml8pl0gbmd5v1gqs9jz7s79kq2x36\" is not 32 characters of the nix32 alphabet"
            )
        );
        assert_eq!(
            problem_of("/nix/store/abc-hello"),
            "invalid store path \"/nix/store/abc-hello\": the hash part \"abc\" is not 32 \
             characters of the nix32 alphabet"
        );
    }

    #[test]
    fn rejects_a_missing_name() {
        let bare = format!("/nix/store/{}", "1".repeat(32));
        assert_eq!(
            problem_of(&bare),
            format!(
                "invalid store path {bare:?}: there is no \"-<name>\" after the 32-character hash"
            )
        );
        let dash = format!("{bare}-");
        assert_eq!(
            problem_of(&dash),
            format!(
                "invalid store path {dash:?}: there is no \"-<name>\" after the 32-character hash"
            )
        );
    }

    #[test]
    fn rejects_a_name_that_is_too_long() {
        let value = format!("{}-{}", "z".repeat(32), "n".repeat(212));
        assert_eq!(
            StorePath::from_base_name(&value).unwrap_err().to_string(),
            format!(
                "invalid store path {value:?}: the name is 212 characters long, at most 211 are \
                 allowed"
            )
        );
    }

    #[test]
    fn rejects_a_name_starting_with_a_dot() {
        let value = format!("{}-.hidden", "z".repeat(32));
        assert_eq!(
            StorePath::from_base_name(&value).unwrap_err().to_string(),
            format!("invalid store path {value:?}: the name \".hidden\" starts with '.'")
        );
    }

    #[test]
    fn rejects_a_name_with_a_forbidden_character() {
        let value = format!("{}-hello world", "z".repeat(32));
        assert_eq!(
            StorePath::from_base_name(&value).unwrap_err().to_string(),
            format!(
                "invalid store path {value:?}: the name \"hello world\" contains ' '; only A-Z \
                 a-z 0-9 + - . _ ? = are allowed"
            )
        );
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        assert!(StorePath::from_base_name(&"é".repeat(20)).is_err());
        assert!(StorePath::from_base_name(&format!("{}-é", "z".repeat(32))).is_err());
    }

    #[test]
    fn serde_uses_the_full_path_string() {
        let path = StorePath::parse(HELLO).unwrap();
        let as_toml = toml::Value::try_from(&path).unwrap();
        assert_eq!(as_toml, toml::Value::String(HELLO.to_string()));
        let back: StorePath = as_toml.try_into().unwrap();
        assert_eq!(back, path);
        let bad: Result<StorePath, _> = toml::Value::String("/tmp/x".into()).try_into();
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("invalid store path \"/tmp/x\""));
    }
}
