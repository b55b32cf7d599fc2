//! `<hash>.narinfo`: parsed with the cachix `nix-narinfo` crate, then checked against the path
//! that was asked for and turned into nixlet's own types.

use std::collections::BTreeSet;
use std::fmt;

use nix_derivation::{CAHash, NixHash, StoreDir};
use nixlet_manifest::StorePath;

use crate::signature;

/// How a NAR is compressed on the cache. An absent `Compression:` line means bzip2, as in Nix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Bzip2,
    Gzip,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Gzip => "gzip",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    #[error("malformed narinfo: {0}")]
    Malformed(String),
    #[error("narinfo describes {found}, not the path asked for")]
    OtherPath { found: String },
    #[error("narinfo NarHash {value} is not a sha256 hash")]
    NarHashNotSha256 { value: String },
    #[error("narinfo names compression {value:?}, which nixlet cannot decompress")]
    UnsupportedCompression { value: String },
    #[error("narinfo field {field} holds {value:?}, which is not a valid store path: {problem}")]
    InvalidPath {
        field: &'static str,
        value: String,
        problem: String,
    },
}

/// A narinfo that is well-formed and describes the path asked for. Nothing here is trusted yet:
/// see [`crate::trust`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Where the NAR is, relative to the cache URL unless absolute.
    pub url: String,
    pub compression: Compression,
    pub nar_hash: [u8; 32],
    pub nar_size: u64,
    /// Every reference, including the path itself if it refers to itself.
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// `Sig:` values, `name:base64`.
    pub signatures: Vec<String>,
    pub ca: Option<CAHash>,
    pub file_size: Option<u64>,
}

impl NarInfo {
    pub fn parse(bytes: &[u8], expected: &StorePath) -> Result<NarInfo, NarInfoError> {
        let parsed = nix_narinfo::NarInfo::parse_in(&StoreDir::default(), bytes)
            .map_err(|error| NarInfoError::Malformed(error.to_string()))?;
        let store_path = convert_path("StorePath", parsed.store_path())?;
        if store_path != *expected {
            // Checked before anything else is believed: a cache (or whoever sits in front of it)
            // may answer a request for one hash with the valid, signed narinfo of another path.
            return Err(NarInfoError::OtherPath {
                found: store_path.to_string(),
            });
        }
        let nar_hash = match parsed.nar_hash() {
            NixHash::Sha256(digest) => *digest,
            other => {
                return Err(NarInfoError::NarHashNotSha256 {
                    value: other.to_nix_nixbase32_string(),
                })
            }
        };
        let compression = match parsed.compression() {
            nix_narinfo::Compression::None => Compression::None,
            nix_narinfo::Compression::Xz => Compression::Xz,
            nix_narinfo::Compression::Zstd => Compression::Zstd,
            nix_narinfo::Compression::Bzip2 => Compression::Bzip2,
            nix_narinfo::Compression::Gzip => Compression::Gzip,
            other => {
                return Err(NarInfoError::UnsupportedCompression {
                    value: other.as_str().to_string(),
                })
            }
        };
        let references = parsed
            .references()
            .iter()
            .map(|reference| convert_path("References", reference))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let deriver = parsed
            .deriver()
            .map(|deriver| convert_path("Deriver", deriver))
            .transpose()?;
        Ok(NarInfo {
            store_path,
            url: parsed.url().to_string(),
            compression,
            nar_hash,
            nar_size: parsed.nar_size(),
            references,
            deriver,
            signatures: parsed
                .signatures()
                .iter()
                .map(|sig| format!("{}:{}", sig.key_name, sig.encoded))
                .collect(),
            ca: parsed.content_address().cloned(),
            file_size: parsed.file_size(),
        })
    }

    /// What the cache's key signed (see [`signature::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        signature::fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// References other than the path itself: the paths that must be installed first.
    pub fn dependencies(&self) -> impl Iterator<Item = &StorePath> {
        self.references.iter().filter(|r| **r != self.store_path)
    }

    pub fn nar_hash_nix32(&self) -> String {
        format!("sha256:{}", crate::nix32::encode(&self.nar_hash))
    }
}

fn convert_path(
    field: &'static str,
    path: &nix_derivation::StorePath,
) -> Result<StorePath, NarInfoError> {
    let base = path.to_basename();
    StorePath::from_base_name(&base).map_err(|error| NarInfoError::InvalidPath {
        field,
        value: base,
        problem: error.problem.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d";

    fn record(extra: &str) -> String {
        format!(
            "StorePath: {PATH}\n\
             URL: nar/0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5.nar\n\
             NarHash: sha256:0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5\n\
             NarSize: 480\n{extra}"
        )
    }

    fn expected() -> StorePath {
        StorePath::parse(PATH).unwrap()
    }

    #[test]
    fn parses_what_nix_copy_writes() {
        let text = record(
            "Compression: xz\nFileSize: 200\n\
             References: jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d 9hhgbag1sqvlzh6ipsk1q8ac1haln8ig-nixlet-test-busybox\n\
             Deriver: 3q7baw0ny41ayd9rni3vq6dq35dsfa5r-nixlet-test-data.drv\n\
             Sig: k-1:AAAA\nSig: k-2:BBBB\n\
             CA: fixed:r:sha256:0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5\n",
        );
        let info = NarInfo::parse(text.as_bytes(), &expected()).unwrap();
        assert_eq!(info.compression, Compression::Xz);
        assert_eq!(info.nar_size, 480);
        assert_eq!(info.file_size, Some(200));
        assert_eq!(info.references.len(), 2);
        assert_eq!(
            info.dependencies().map(|p| p.name()).collect::<Vec<_>>(),
            ["nixlet-test-busybox"]
        );
        assert_eq!(info.signatures, ["k-1:AAAA", "k-2:BBBB"]);
        assert_eq!(
            info.deriver.as_ref().unwrap().name(),
            "nixlet-test-data.drv"
        );
        assert!(info.ca.is_some());
        assert_eq!(
            info.nar_hash_nix32(),
            "sha256:0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5"
        );
        assert_eq!(
            info.fingerprint(),
            format!(
                "1;{PATH};sha256:0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5;480;\
                 /nix/store/9hhgbag1sqvlzh6ipsk1q8ac1haln8ig-nixlet-test-busybox,{PATH}"
            )
        );
    }

    #[test]
    fn absent_compression_means_bzip2() {
        let info = NarInfo::parse(record("").as_bytes(), &expected()).unwrap();
        assert_eq!(info.compression, Compression::Bzip2);
        assert!(info.references.is_empty());
    }

    #[test]
    fn a_narinfo_for_another_path_is_rejected() {
        let other = StorePath::parse("/nix/store/00000000000000000000000000000000-d").unwrap();
        assert_eq!(
            NarInfo::parse(record("").as_bytes(), &other)
                .unwrap_err()
                .to_string(),
            format!("narinfo describes {PATH}, not the path asked for")
        );
    }

    #[test]
    fn paths_outside_the_store_are_refused_in_every_path_field() {
        let cases = [
            (
                "StorePath",
                record("").replace(PATH, "/tmp/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d"),
            ),
            (
                "StorePath",
                record("").replace(PATH, "/nix/store/../../etc/passwd"),
            ),
            ("References", record("References: ../../etc/passwd\n")),
            ("References", record("References: /etc/passwd\n")),
            (
                "References",
                record("References: jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d/../../x\n"),
            ),
            ("References", record("References: tooshort-x\n")),
            ("Deriver", record("Deriver: ../x.drv\n")),
        ];
        for (field, text) in cases {
            let error = NarInfo::parse(text.as_bytes(), &expected()).unwrap_err();
            assert!(
                matches!(
                    error,
                    NarInfoError::Malformed(_) | NarInfoError::InvalidPath { .. }
                ),
                "{field}: {error}"
            );
        }
    }

    #[test]
    fn unsupported_compression_and_garbage_are_errors() {
        let error = NarInfo::parse(record("Compression: lz4\n").as_bytes(), &expected());
        assert_eq!(
            error.unwrap_err().to_string(),
            "narinfo names compression \"lz4\", which nixlet cannot decompress"
        );
        let error = NarInfo::parse(b"<html>not found</html>", &expected()).unwrap_err();
        assert!(
            error.to_string().starts_with("malformed narinfo: "),
            "{error}"
        );
        let text = record("").replace("NarHash: sha256:", "NarHash: sha1:");
        assert!(NarInfo::parse(text.as_bytes(), &expected()).is_err());
    }
}
