//! Whether a narinfo, and then the bytes it led to, may enter the store.
//!
//! A path is accepted when a trusted key signed its narinfo. When signatures are not required,
//! an unsigned path is accepted only as content-addressed: its `CA:` line must give exactly the
//! store path asked for, *and* the hash that line states must be recomputed from the bytes
//! received ([`verify_content`]). A `CA:` line alone proves nothing: it is not signed, so a
//! genuine one can be pasted next to an attacker's NarHash. Nothing is ever accepted on no
//! evidence at all.

use nix_derivation::{CAHash, NixHash};

use crate::content_address;
use crate::fetch_error::FetchCause;
use crate::narinfo::NarInfo;
use crate::signature::{self, SignatureCheck, TrustedKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A trusted key signed the narinfo.
    Signed { key: String },
    /// Unsigned; the content address must be confirmed from the bytes before installing.
    ContentAddressed,
}

/// The verdict on a narinfo before anything is downloaded.
pub fn check_narinfo(
    info: &NarInfo,
    trusted: &[TrustedKey],
    require_signatures: bool,
) -> Result<Trust, FetchCause> {
    let check = signature::check(&info.fingerprint(), &info.signatures, trusted);
    if let SignatureCheck::Trusted { key } = check {
        return Ok(Trust::Signed { key });
    }
    if !require_signatures {
        if let Some(ca) = &info.ca {
            return match content_address::names_path(ca, &info.store_path, &info.references) {
                Ok(true) => Ok(Trust::ContentAddressed),
                Ok(false) => Err(FetchCause::ContentAddressNotForPath {
                    ca: ca.to_nix_string(),
                }),
                Err(error) => Err(FetchCause::ContentAddress(error)),
            };
        }
    }
    Err(match check {
        SignatureCheck::Trusted { .. } => unreachable!("handled above"),
        SignatureCheck::Unsigned if require_signatures => FetchCause::Unsigned,
        SignatureCheck::Unsigned => FetchCause::UnsignedNotContentAddressed {
            signed_by: "nobody".to_string(),
        },
        SignatureCheck::UntrustedKeys { keys } => FetchCause::UntrustedKeys {
            keys: keys.join(", "),
            trusted: if trusted.is_empty() {
                "none configured".to_string()
            } else {
                trusted
                    .iter()
                    .map(TrustedKey::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        },
        SignatureCheck::Invalid { key } => FetchCause::InvalidSignature { key },
    })
}

/// What must be hashed, besides the NAR's sha256, to check a content address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentHashPlan {
    /// The NAR stream with this algorithm (sha256 needs nothing extra).
    Nar(nix_derivation::HashAlgorithm),
    /// The contents of the single regular file the path must be.
    FlatFile(nix_derivation::HashAlgorithm),
}

pub fn content_hash_plan(ca: &CAHash) -> Result<ContentHashPlan, FetchCause> {
    match ca {
        CAHash::Nar(hash) => Ok(ContentHashPlan::Nar(hash.algorithm())),
        CAHash::Flat(hash) => Ok(ContentHashPlan::FlatFile(hash.algorithm())),
        CAHash::Text(_) => Ok(ContentHashPlan::FlatFile(
            nix_derivation::HashAlgorithm::Sha256,
        )),
        CAHash::Git(_) => Err(FetchCause::ContentAddress(
            content_address::ContentAddressError::GitUnsupported {
                ca: ca.to_nix_string(),
            },
        )),
    }
}

/// Checks the hash recomputed from the received bytes (`actual`, per [`content_hash_plan`]; or
/// `None` when the path is not a single regular file but the address needs one).
pub fn verify_content(ca: &CAHash, actual: Option<&NixHash>) -> Result<(), FetchCause> {
    match actual {
        Some(actual) if *actual == ca.hash() => Ok(()),
        Some(actual) => Err(FetchCause::ForgedContentAddress {
            ca: ca.to_nix_string(),
            actual: actual.to_nix_nixbase32_string(),
        }),
        None => Err(FetchCause::ForgedContentAddress {
            ca: ca.to_nix_string(),
            actual: "a path that is not a single non-executable regular file".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_manifest::StorePath;

    // The narinfo of `nix-store --add` of a small directory, signed by `nix copy` (see
    // signature.rs), whose CA line is genuine.
    const KEY: &str = "nixlet-unit-test-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=";
    const SIG: &str = "nixlet-unit-test-1:hAE/r6Blfdj8iOm6AUvVXn0bM9FqMlIMa1V4OnSh/Nik1fa5BfX5W7M4WTygVCNy0ueWXkaJ0NUAZSQpMUXaAA==";
    const HASH: &str = "0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5";

    fn info(nar_hash: &str, sig: Option<&str>) -> NarInfo {
        let text = format!(
            "StorePath: /nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d\nURL: nar/x.nar\n\
             Compression: none\nNarHash: sha256:{nar_hash}\nNarSize: 480\nReferences: \n\
             {}CA: fixed:r:sha256:{HASH}\n",
            sig.map(|s| format!("Sig: {s}\n")).unwrap_or_default()
        );
        let path = StorePath::parse("/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d").unwrap();
        NarInfo::parse(text.as_bytes(), &path).unwrap()
    }

    fn keys() -> Vec<TrustedKey> {
        vec![TrustedKey::parse(KEY).unwrap()]
    }

    #[test]
    fn a_trusted_signature_is_enough() {
        assert_eq!(
            check_narinfo(&info(HASH, Some(SIG)), &keys(), true).unwrap(),
            Trust::Signed {
                key: "nixlet-unit-test-1".into()
            }
        );
    }

    #[test]
    fn unsigned_paths_are_refused_when_signatures_are_required() {
        let error = check_narinfo(&info(HASH, None), &keys(), true).unwrap_err();
        assert_eq!(
            error.to_string(),
            "narinfo has no signature, and signatures are required"
        );
    }

    #[test]
    fn an_unsigned_content_addressed_path_is_provisionally_accepted() {
        assert_eq!(
            check_narinfo(&info(HASH, None), &keys(), false).unwrap(),
            Trust::ContentAddressed
        );
    }

    #[test]
    fn a_genuine_ca_line_next_to_a_forged_nar_hash_passes_the_narinfo_check_but_not_the_bytes() {
        // The pitfall of design.md §5: the narinfo alone looks fine...
        let forged = "1111111111111111111111111111111111111111111111111111";
        let forged_info = info(forged, None);
        assert_eq!(
            check_narinfo(&forged_info, &keys(), false).unwrap(),
            Trust::ContentAddressed
        );
        // ...the download matches the forged NarHash, and only recomputing the content address
        // from those bytes exposes it.
        let downloaded = NixHash::Sha256(forged_info.nar_hash);
        let error =
            verify_content(forged_info.ca.as_ref().unwrap(), Some(&downloaded)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "content address fixed:r:sha256:{HASH} is forged: the downloaded contents hash \
                 to sha256:{forged}"
            )
        );
        let genuine = info(HASH, None);
        verify_content(
            genuine.ca.as_ref().unwrap(),
            Some(&NixHash::Sha256(genuine.nar_hash)),
        )
        .unwrap();
    }

    #[test]
    fn a_ca_line_for_another_path_is_refused() {
        let mut other = info(HASH, None);
        other.ca = Some(CAHash::Nar(NixHash::Sha256([3; 32])));
        assert!(matches!(
            check_narinfo(&other, &keys(), false).unwrap_err(),
            FetchCause::ContentAddressNotForPath { .. }
        ));
    }

    #[test]
    fn signature_problems_are_told_apart() {
        let other_key =
            vec![
                TrustedKey::parse("other-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=").unwrap(),
            ];
        assert_eq!(
            check_narinfo(&info(HASH, Some(SIG)), &other_key, true)
                .unwrap_err()
                .to_string(),
            "narinfo is signed only by untrusted keys (nixlet-unit-test-1); trusted keys: other-1"
        );
        let tampered = info(
            "1111111111111111111111111111111111111111111111111111",
            Some(SIG),
        );
        assert!(matches!(
            check_narinfo(&tampered, &keys(), true).unwrap_err(),
            FetchCause::InvalidSignature { .. }
        ));
    }
}
