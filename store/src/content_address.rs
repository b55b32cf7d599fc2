//! Store paths of content-addressed objects, computed as Nix 2.8 does (`makeStorePath`,
//! `makeFixedOutputPath`, `makeTextPath`).
//!
//! A narinfo's `CA:` line is not covered by its signature, so an unsigned path is only accepted
//! when the content address recomputed from the bytes actually received gives back the store
//! path that was asked for (design.md §5). This file is the pure half of that check.

use std::collections::BTreeSet;

use nix_derivation::{CAHash, HashAlgorithm, NixHash};
use nixlet_manifest::{StorePath, STORE_DIR};
use sha2::{Digest, Sha256};

use crate::nix32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentAddressError {
    #[error("content address {ca} uses git hashing, which nix 2.8 and nixlet do not support")]
    GitUnsupported { ca: String },
    #[error("content address {ca} cannot have references (it has {count})")]
    UnexpectedReferences { ca: String, count: usize },
    #[error("text content address {ca} cannot refer to its own path")]
    TextSelfReference { ca: String },
    #[error("content address {ca} with name {name:?} gives an invalid store path: {problem}")]
    InvalidName {
        ca: String,
        name: String,
        problem: String,
    },
}

/// `makeStorePath`: sha256 of `<type>:<algo>:<base16 hash>:/nix/store:<name>`, folded to 20
/// bytes, in nix32.
pub fn make_store_path(
    path_type: &str,
    hash: &NixHash,
    name: &str,
) -> Result<StorePath, nixlet_manifest::StorePathError> {
    let fingerprint = format!(
        "{path_type}:{}:{STORE_DIR}:{name}",
        hash.to_nix_base16_string()
    );
    let digest = Sha256::digest(fingerprint.as_bytes());
    let base = format!("{}-{name}", nix32::encode(&compress_hash(&digest, 20)));
    StorePath::from_base_name(&base)
}

/// Nix's `compressHash`: byte `i` of the input is XORed into byte `i mod size` of the output.
fn compress_hash(hash: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, byte) in hash.iter().enumerate() {
        out[i % size] ^= byte;
    }
    out
}

/// Nix's `makeType`: the type string followed by every reference (sorted) and `:self`.
fn make_type<'a>(
    base: &str,
    references: impl IntoIterator<Item = &'a StorePath>,
    self_reference: bool,
) -> String {
    let sorted: BTreeSet<&StorePath> = references.into_iter().collect();
    let mut path_type = base.to_string();
    for reference in sorted {
        path_type.push(':');
        path_type.push_str(&reference.to_string());
    }
    if self_reference {
        path_type.push_str(":self");
    }
    path_type
}

/// The store path that content address `ca` gives an object called `name` with these
/// `references` (not including itself; `self_reference` says whether it refers to itself).
pub fn store_path_for<'a>(
    ca: &CAHash,
    name: &str,
    references: impl IntoIterator<Item = &'a StorePath>,
    self_reference: bool,
) -> Result<StorePath, ContentAddressError> {
    let references: Vec<&StorePath> = references.into_iter().collect();
    let ca_string = || ca.to_nix_string();
    let (path_type, hash) = match ca {
        CAHash::Git(_) => {
            return Err(ContentAddressError::GitUnsupported { ca: ca_string() });
        }
        CAHash::Text(digest) => {
            if self_reference {
                return Err(ContentAddressError::TextSelfReference { ca: ca_string() });
            }
            (
                make_type("text", references, false),
                NixHash::Sha256(*digest),
            )
        }
        CAHash::Nar(hash @ NixHash::Sha256(_)) => (
            make_type("source", references, self_reference),
            hash.clone(),
        ),
        CAHash::Nar(hash) | CAHash::Flat(hash) => {
            // Every other fixed-output hash goes through an extra indirection, and Nix allows no
            // references at all there.
            let count = references.len() + usize::from(self_reference);
            if count > 0 {
                return Err(ContentAddressError::UnexpectedReferences {
                    ca: ca_string(),
                    count,
                });
            }
            let method = if matches!(ca, CAHash::Nar(_)) {
                "r:"
            } else {
                ""
            };
            let inner = format!("fixed:out:{method}{}:", hash.to_nix_base16_string());
            let digest: [u8; 32] = Sha256::digest(inner.as_bytes()).into();
            ("output:out".to_string(), NixHash::Sha256(digest))
        }
    };
    make_store_path(&path_type, &hash, name).map_err(|error| ContentAddressError::InvalidName {
        ca: ca_string(),
        name: name.to_string(),
        problem: error.problem.to_string(),
    })
}

/// Whether `ca`, with the object's references, names exactly `path`.
pub fn names_path(
    ca: &CAHash,
    path: &StorePath,
    references: &BTreeSet<StorePath>,
) -> Result<bool, ContentAddressError> {
    let self_reference = references.contains(path);
    let others = references.iter().filter(|reference| *reference != path);
    Ok(store_path_for(ca, path.name(), others, self_reference)? == *path)
}

/// The algorithm whose digest of the received bytes must equal the content address's hash.
pub fn hash_algorithm(ca: &CAHash) -> HashAlgorithm {
    ca.hash().algorithm()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from this machine's Nix 2.8 database (`ValidPaths.path`, `.ca` and the `Refs`).

    fn p(full: &str) -> StorePath {
        StorePath::parse(full).unwrap()
    }

    fn ca(text: &str) -> CAHash {
        CAHash::parse(text).unwrap()
    }

    #[test]
    fn recursive_sha256_without_references_is_a_source_path() {
        // `builtins.path { path = /bin/busybox; }`: a single file added recursively.
        let path = store_path_for(
            &ca("fixed:r:sha256:0sggvzh4dj0h7krcpg2sl239l8hashdvgi26r7kbjs1pkhahy611"),
            "nixlet-test-busybox",
            [],
            false,
        )
        .unwrap();
        assert_eq!(
            path,
            p("/nix/store/9hhgbag1sqvlzh6ipsk1q8ac1haln8ig-nixlet-test-busybox")
        );
    }

    #[test]
    fn text_paths_include_their_references_in_sorted_order() {
        let busybox_src = p("/nix/store/4cfallx8s9947kirgj365dc3dzx73w84-nixlet-test-busybox-src");
        let busybox_drv = p("/nix/store/x1s2yp037rhdgakgfrg1xpdd70vqmc5n-nixlet-test-busybox.drv");
        let data_drv = p("/nix/store/hzzs70g57srbdjwq64lb5fmn85iad78z-nixlet-test-data.drv");
        let path = store_path_for(
            &ca("text:sha256:1wxhd9gfw3hhqvg1c9a7a470n66brhq419924gvwrg0lmnwsccbi"),
            "nixlet-test-hello.drv",
            // Deliberately unsorted: the order must not matter.
            [&data_drv, &busybox_src, &busybox_drv],
            false,
        )
        .unwrap();
        assert_eq!(
            path,
            p("/nix/store/vf3c9whdn88nl7ba6pdc9gw25ynrc9bp-nixlet-test-hello.drv")
        );
    }

    #[test]
    fn flat_and_non_sha256_hashes_use_the_fixed_output_indirection() {
        // `nix-store --add-fixed [--recursive] ALGO` of a 12-byte file "hello nixlet".
        for (ca_text, expected) in [
            (
                "fixed:sha256:0mlc49nlq173jhskg7mlpifdv8dbyz3qiyv0f6kqx1z1f429mlzd",
                "/nix/store/wdnb7nsabffq70fkacdjaw31iscv1lw8-nixlet-ca-flat",
            ),
            (
                "fixed:sha1:qkl16fv64hsgqwm3d2ygbcq91zzszv63",
                "/nix/store/al7w6w53s011vwrq6in4nxqqsgra1v90-nixlet-ca-flat",
            ),
            (
                "fixed:r:sha1:c9629f1757gd0hn2p4gvx94v97kk42k4",
                "/nix/store/hjhfz3gxl5dy3900c6ac0v1v2rwn3qp1-nixlet-ca-flat",
            ),
        ] {
            let path = store_path_for(&ca(ca_text), "nixlet-ca-flat", [], false).unwrap();
            assert_eq!(path, p(expected), "{ca_text}");
        }
    }

    #[test]
    fn names_path_separates_the_self_reference() {
        let path = p("/nix/store/9hhgbag1sqvlzh6ipsk1q8ac1haln8ig-nixlet-test-busybox");
        let ca = ca("fixed:r:sha256:0sggvzh4dj0h7krcpg2sl239l8hashdvgi26r7kbjs1pkhahy611");
        assert!(names_path(&ca, &path, &BTreeSet::new()).unwrap());
        // Claiming a self-reference changes the type string, so the path no longer matches.
        let with_self: BTreeSet<StorePath> = [path.clone()].into();
        assert!(!names_path(&ca, &path, &with_self).unwrap());
        // And so does another hash: a genuine CA line cannot vouch for different contents.
        let other = CAHash::Nar(NixHash::Sha256([7; 32]));
        assert!(!names_path(&other, &path, &BTreeSet::new()).unwrap());
    }

    #[test]
    fn flat_hashes_cannot_have_references() {
        let reference = p("/nix/store/9hhgbag1sqvlzh6ipsk1q8ac1haln8ig-nixlet-test-busybox");
        let error = store_path_for(
            &ca("fixed:sha256:0mlc49nlq173jhskg7mlpifdv8dbyz3qiyv0f6kqx1z1f429mlzd"),
            "x",
            [&reference],
            false,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "content address fixed:sha256:0mlc49nlq173jhskg7mlpifdv8dbyz3qiyv0f6kqx1z1f429mlzd \
             cannot have references (it has 1)"
        );
    }

    #[test]
    fn compress_hash_folds_by_xor() {
        let input: Vec<u8> = (0..32).collect();
        let out = compress_hash(&input, 20);
        assert_eq!(out[0], 20);
        assert_eq!(out[11], 11 ^ 31);
        assert_eq!(out[12], 12);
    }
}
