//! What the Nix database says about one valid path: its NAR hash and size and its references,
//! as `nix path-info --json` shows them. The bill of materials is made of these.

use std::collections::BTreeSet;
use std::path::Path;

use nixlet_manifest::StorePath;

use crate::{nix32, LocalStore, NixDb, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// sha256 of the path's NAR serialisation.
    pub nar_hash: [u8; 32],
    /// 0 when the database does not know it (very old registrations).
    pub nar_size: u64,
    /// Direct references, the path itself included when it refers to itself.
    pub references: BTreeSet<StorePath>,
}

impl PathInfo {
    /// `sha256:<nix32>`, as narinfo files and `nix path-info` print it.
    pub fn nar_hash_nix32(&self) -> String {
        format!("sha256:{}", nix32::encode(&self.nar_hash))
    }

    pub fn nar_hash_hex(&self) -> String {
        hex::encode(self.nar_hash)
    }
}

/// A `ValidPaths.hash` value: Nix writes `sha256:<base16>`; nix32 is accepted as well because
/// tools that register paths directly have written it.
pub fn parse_nar_hash(value: &str) -> Option<[u8; 32]> {
    let digest = value.strip_prefix("sha256:")?;
    let bytes = match digest.len() {
        64 => hex::decode(digest).ok()?,
        52 => nix32::decode(digest, 32)?,
        _ => return None,
    };
    bytes.try_into().ok()
}

/// The closure of `roots` with each member's registration, sorted by path. Every member must
/// be registered and present on disk, as for [`LocalStore::closure`].
pub fn closure_infos(nix_db: &Path, roots: &[StorePath]) -> Result<Vec<PathInfo>, StoreError> {
    let closure = LocalStore::new(nix_db).closure(roots)?;
    let db = NixDb::open(nix_db)?;
    closure.iter().map(|path| db.path_info(path)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST_HEX: &str = "1b8c6e3a4f5d2e7c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

    #[test]
    fn base16_and_nix32_hashes_decode_to_the_same_digest() {
        let digest: [u8; 32] = hex::decode(DIGEST_HEX).unwrap().try_into().unwrap();
        assert_eq!(
            parse_nar_hash(&format!("sha256:{DIGEST_HEX}")),
            Some(digest)
        );
        let nix32 = format!("sha256:{}", nix32::encode(&digest));
        assert_eq!(parse_nar_hash(&nix32), Some(digest));
    }

    #[test]
    fn other_algorithms_and_lengths_are_refused() {
        assert_eq!(parse_nar_hash(&format!("sha512:{DIGEST_HEX}")), None);
        assert_eq!(parse_nar_hash("sha256:abc"), None);
        assert_eq!(parse_nar_hash(DIGEST_HEX), None);
    }
}
