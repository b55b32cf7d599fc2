//! The seeds reach what the targets' checks are about: a target whose seeds all fail at the
//! first step checks nothing deeper, and a fuzzer starting from them has to find the way in
//! by chance.

use std::fs;
use std::path::{Path, PathBuf};

use nixlet_manifest::StorePath;
use nixlet_store::narinfo::NarInfo;
use nixlet_store::signature::TrustedKey;
use nixlet_store::trust::{check_narinfo, Trust};

fn seeds(target: &str, prefix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {target} seed named {prefix}*");
    found
}

#[test]
fn signed_narinfo_seeds_verify_and_unsigned_ones_are_content_addressed() {
    let keys = [
        "nixlet-unit-test-1:Yj/RKvixfnEftzTm7Favz50ZQ92/Leb9T/WanWWKbek=",
        "nixlet-fuzz-seed-1:Wx61HUqc9RuIqg0Ld2FERH73OE1bsYzYfZrNeY0HhsY=",
    ]
    .map(|key| TrustedKey::parse(key).unwrap());
    let parse = |file: &Path| {
        let data = fs::read(file).unwrap();
        let text = String::from_utf8(data[1..].to_vec()).unwrap();
        let path = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("StorePath: ")
            .unwrap();
        NarInfo::parse(&data[1..], &StorePath::parse(path).unwrap()).unwrap()
    };
    let mut signed = seeds("narinfo", "nix-copy-signed");
    signed.extend(seeds("narinfo", "unit-test-signed"));
    for file in signed {
        let verdict = check_narinfo(&parse(&file), &keys, true);
        assert!(
            matches!(verdict, Ok(Trust::Signed { .. })),
            "{file:?}: {verdict:?}"
        );
    }
    for file in seeds("narinfo", "nix-copy-xz") {
        let verdict = check_narinfo(&parse(&file), &keys, false);
        assert!(
            matches!(verdict, Ok(Trust::ContentAddressed)),
            "{file:?}: {verdict:?}"
        );
    }
}

#[test]
fn narinfo_seeds_name_the_path_their_first_byte_picks() {
    // The target asks for one of three paths by byte 0; a seed for another is refused early.
    let expected = [
        "/nix/store/jmd3d6znmmn7ak7kzrl2l3920b6l2cz1-d",
        "/nix/store/dcqns0jn6ibkrg00lrn5h82ndyrmq8ix-d",
        "/nix/store/jfwh373r73dkdhqiqk9f7c22xn9yklav-f",
    ];
    for file in seeds("narinfo", "nix-copy") {
        let data = fs::read(&file).unwrap();
        let path = StorePath::parse(expected[usize::from(data[0]) % 3]).unwrap();
        assert!(NarInfo::parse(&data[1..], &path).is_ok(), "{file:?}");
    }
}
