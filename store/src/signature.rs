//! Narinfo signatures: the fingerprint Nix signs, trusted keys, and ed25519 verification.
//!
//! Only StorePath, NarHash, NarSize and References are covered: URL, Compression, FileHash and
//! CA can be changed by anyone who can change the narinfo without invalidating a signature.

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use nixlet_manifest::StorePath;

use crate::nix32;

/// The string a binary cache key signs:
/// `1;<StorePath>;sha256:<nix32 NarHash>;<NarSize>;<references, full paths, sorted, comma-joined>`.
pub fn fingerprint<'a>(
    path: &StorePath,
    nar_hash: &[u8; 32],
    nar_size: u64,
    references: impl IntoIterator<Item = &'a StorePath>,
) -> String {
    let mut references: Vec<String> = references.into_iter().map(|r| r.to_string()).collect();
    references.sort();
    format!(
        "1;{path};sha256:{};{nar_size};{}",
        nix32::encode(nar_hash),
        references.join(",")
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted public key {value:?}: {problem}")]
pub struct KeyError {
    pub value: String,
    pub problem: &'static str,
}

/// A trusted public key, configured as `name:base64` exactly as Nix's `trusted-public-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    name: String,
    key: VerifyingKey,
}

impl TrustedKey {
    pub fn parse(value: &str) -> Result<TrustedKey, KeyError> {
        let fail = |problem| KeyError {
            value: value.to_string(),
            problem,
        };
        let (name, encoded) = value
            .trim()
            .split_once(':')
            .ok_or_else(|| fail("expected name:base64"))?;
        if name.is_empty() {
            return Err(fail("the key name is empty"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| fail("the key is not valid base64"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| fail("an ed25519 public key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| fail("the bytes are not an ed25519 public key"))?;
        Ok(TrustedKey {
            name: name.to_string(),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What checking a narinfo's `Sig:` lines against the trusted keys found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A signature by this trusted key verifies.
    Trusted { key: String },
    /// No `Sig:` line at all.
    Unsigned,
    /// Signed, but only by keys that are not trusted.
    UntrustedKeys { keys: Vec<String> },
    /// A signature names a trusted key but does not verify: the signed fields were changed
    /// after signing, or another key with the same name signed it.
    Invalid { key: String },
}

/// Checks `signatures` (`name:base64` as in `Sig:` lines) over `fingerprint`.
pub fn check(fingerprint: &str, signatures: &[String], trusted: &[TrustedKey]) -> SignatureCheck {
    if signatures.is_empty() {
        return SignatureCheck::Unsigned;
    }
    let mut invalid = None;
    let mut untrusted = Vec::new();
    for signature in signatures {
        let (name, encoded) = signature.split_once(':').unwrap_or((signature, ""));
        let matching: Vec<&TrustedKey> = trusted.iter().filter(|k| k.name == name).collect();
        if matching.is_empty() {
            untrusted.push(name.to_string());
            continue;
        }
        let verified = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .is_some_and(|sig| {
                matching
                    .iter()
                    .any(|key| key.key.verify_strict(fingerprint.as_bytes(), &sig).is_ok())
            });
        if verified {
            return SignatureCheck::Trusted {
                key: name.to_string(),
            };
        }
        invalid.get_or_insert_with(|| name.to_string());
    }
    match invalid {
        Some(key) => SignatureCheck::Invalid { key },
        None => SignatureCheck::UntrustedKeys { keys: untrusted },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A narinfo that `nix copy --to 'file://…?secret-key=…'` wrote on this machine for
    // `nix-store --add` of a directory holding a file and a symlink, and the key's public half.
    const PUBLIC_KEY: &str = "nixlet-unit-test-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=";
    const SIG: &str = "nixlet-unit-test-1:hAE/r6Blfdj8iOm6AUvVXn0bM9FqMlIMa1V4OnSh/Nik1fa5BfX5W7M4WTygVCNy0ueWXkaJ0NUAZSQpMUXaAA==";
    const PATH: &str = "/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d";
    const NAR_HASH: &str = "0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5";

    fn nar_hash() -> [u8; 32] {
        nix32::decode(NAR_HASH, 32).unwrap().try_into().unwrap()
    }

    fn real_fingerprint() -> String {
        fingerprint(&StorePath::parse(PATH).unwrap(), &nar_hash(), 480, [])
    }

    #[test]
    fn fingerprint_has_nix_layout() {
        assert_eq!(
            real_fingerprint(),
            format!("1;{PATH};sha256:{NAR_HASH};480;")
        );
        let a = StorePath::parse("/nix/store/00000000000000000000000000000000-a").unwrap();
        let b = StorePath::parse("/nix/store/11111111111111111111111111111111-b").unwrap();
        let with_refs = fingerprint(&a, &nar_hash(), 1, [&b, &a]);
        assert!(with_refs.ends_with(&format!(";1;{a},{b}")), "{with_refs}");
    }

    #[test]
    fn a_signature_made_by_nix_verifies() {
        let keys = [TrustedKey::parse(PUBLIC_KEY).unwrap()];
        assert_eq!(
            check(&real_fingerprint(), &[SIG.to_string()], &keys),
            SignatureCheck::Trusted {
                key: "nixlet-unit-test-1".into()
            }
        );
    }

    #[test]
    fn a_changed_signed_field_invalidates_the_signature() {
        let keys = [TrustedKey::parse(PUBLIC_KEY).unwrap()];
        let forged = fingerprint(&StorePath::parse(PATH).unwrap(), &nar_hash(), 481, []);
        assert_eq!(
            check(&forged, &[SIG.to_string()], &keys),
            SignatureCheck::Invalid {
                key: "nixlet-unit-test-1".into()
            }
        );
    }

    #[test]
    fn signatures_by_other_keys_are_not_trusted() {
        let other = "cache.example.org-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=";
        let keys = [TrustedKey::parse(other).unwrap()];
        assert_eq!(
            check(&real_fingerprint(), &[SIG.to_string()], &keys),
            SignatureCheck::UntrustedKeys {
                keys: vec!["nixlet-unit-test-1".into()]
            }
        );
        assert_eq!(
            check(&real_fingerprint(), &[], &keys),
            SignatureCheck::Unsigned
        );
    }

    #[test]
    fn one_good_signature_is_enough_whatever_else_is_there() {
        let keys = [TrustedKey::parse(PUBLIC_KEY).unwrap()];
        let sigs = [
            "nixlet-unit-test-1:garbage".to_string(),
            "someone-else:AAAA".to_string(),
            SIG.to_string(),
        ];
        assert!(matches!(
            check(&real_fingerprint(), &sigs, &keys),
            SignatureCheck::Trusted { .. }
        ));
    }

    #[test]
    fn malformed_keys_are_rejected_with_the_value() {
        for (value, problem) in [
            ("nocolon", "expected name:base64"),
            (
                ":Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=",
                "the key name is empty",
            ),
            ("k:!!!", "the key is not valid base64"),
            ("k:AAAA", "an ed25519 public key is 32 bytes"),
        ] {
            let error = TrustedKey::parse(value).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("invalid trusted public key {value:?}: {problem}")
            );
        }
    }
}
