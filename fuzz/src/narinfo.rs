//! `<hash>.narinfo` as a cache (or whoever sits in front of it) answers it: parsed against the
//! path asked for, then judged for trust as the fetcher does before downloading anything.

use nix_derivation::NixHash;
use nixlet_manifest::StorePath;
use nixlet_store::cache_info::CacheInfo;
use nixlet_store::narinfo::NarInfo;
use nixlet_store::signature::TrustedKey;
use nixlet_store::trust::{self, Trust};
use nixlet_store::{content_address, nix32};

/// The paths the seeds describe; byte 0 of an input picks the one asked for.
const EXPECTED: [&str; 3] = [
    "/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d",
    "/nix/store/dcqns0jn6ibkrg00lrn5h82ndyrmq8ix-d",
    "/nix/store/jfwh373r73dkdhqiqk9f7c22xn9yklav-f",
];
/// The keys that signed seed narinfos: store/src/trust.rs's unit-test key, and the key the
/// seeds of `nix copy` to a signed cache were made with (its secret key was thrown away).
const KEYS: [&str; 2] = [
    "nixlet-unit-test-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=",
    "nixlet-fuzz-seed-1:Wx61HUqc9RuIqg0Ld2FERH73OE1bsYzYfZrNeY0HhsY=",
];
/// What those keys signed; no other fingerprint can verify, since the fuzzer cannot forge
/// ed25519.
const SIGNED_FINGERPRINTS: [&str; 3] = [
    "1;/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d;sha256:0hc7x4mami1jj3iay66b0qs9lm2ipl1hhsckccbxcn882rk6f1s5;480;",
    "1;/nix/store/dcqns0jn6ibkrg00lrn5h82ndyrmq8ix-d;sha256:1fb609ba4yh4zy5b1b5lb95hg3wnm258lp3f8msvg25d1bb779dc;1440;",
    "1;/nix/store/jfwh373r73dkdhqiqk9f7c22xn9yklav-f;sha256:0v033h4fi0kjmr14knqd4x18l9w973nph2c6vcblxx3j003ps45b;128;",
];

pub fn narinfo(data: &[u8]) {
    let [choice, data @ ..] = data else {
        return;
    };
    // `nix-cache-info` and `trusted_keys` entries are the other small texts a cache and the
    // node config hand the same code path.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = CacheInfo::parse(text) {
            assert!(!info.store_dir.is_empty() || text.contains("StoreDir"));
        }
        for line in text.lines().take(8) {
            let _ = TrustedKey::parse(line);
        }
    }
    let expected = StorePath::parse(EXPECTED[usize::from(*choice) % EXPECTED.len()])
        .expect("a valid store path");
    let info = match NarInfo::parse(data, &expected) {
        Ok(info) => info,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    // Nothing about another path may be believed.
    assert_eq!(info.store_path, expected);
    for path in info.references.iter().chain(info.deriver.iter()) {
        let text = path.to_string();
        assert_eq!(StorePath::parse(&text).as_ref(), Ok(path), "{text}");
    }
    assert!(info
        .dependencies()
        .all(|dependency| *dependency != expected));
    let hash = info.nar_hash_nix32();
    assert_eq!(
        nix32::decode(&hash["sha256:".len()..], 32).as_deref(),
        Some(&info.nar_hash[..])
    );
    let fingerprint = info.fingerprint();
    let keys = KEYS.map(|key| TrustedKey::parse(key).expect("a valid key"));
    for require_signatures in [true, false] {
        match trust::check_narinfo(&info, &keys, require_signatures) {
            Ok(Trust::Signed { key }) => {
                assert!(KEYS
                    .iter()
                    .any(|known| known.starts_with(&format!("{key}:"))));
                assert!(
                    SIGNED_FINGERPRINTS.contains(&fingerprint.as_str()),
                    "a forged signature verified: {fingerprint}"
                );
            }
            Ok(Trust::ContentAddressed) => {
                assert!(!require_signatures);
                let ca = info.ca.as_ref().expect("trusted by content address");
                assert_eq!(
                    content_address::names_path(ca, &info.store_path, &info.references),
                    Ok(true)
                );
                let _ = trust::content_hash_plan(ca);
            }
            Err(cause) => {
                let _ = cause.to_string();
            }
        }
    }
    if let Some(ca) = &info.ca {
        let _ = content_address::names_path(ca, &info.store_path, &info.references);
        let claimed = NixHash::Sha256(info.nar_hash);
        if trust::verify_content(ca, Some(&claimed)).is_ok() {
            assert_eq!(ca.hash(), claimed);
        }
        assert!(trust::verify_content(ca, None).is_err());
    }
}
