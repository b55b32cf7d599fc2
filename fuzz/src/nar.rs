//! A NAR as a cache serves it: unpacked into a scratch directory, alone ([`nar_unpack`]) or
//! behind the decompressor and the size-limiting, hashing reader the fetcher uses
//! ([`nar_stream`]).

use std::ffi::OsStr;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix_archive::nar::{encode_path, CaseHack};
use nix_derivation::HashAlgorithm;
use nixlet_store::nar_download::{buffered, decompressor, FailureSlot, NarReader};
use nixlet_store::nar_unpack::{unpack, UnpackStats};
use nixlet_store::narinfo::Compression;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::scratch::{scratch, OUT};

pub fn nar_unpack(data: &[u8]) {
    let scratch = scratch();
    let parent = scratch.parent();
    let result = unpack(&mut &data[..], &parent, OsStr::new(OUT));
    scratch.assert_contained();
    if let Ok(stats) = result {
        // Only canonical archives are accepted, so what was restored dumps back to exactly the
        // same bytes, as `nix-store --dump` would: nothing dropped, renamed or added.
        assert_eq!(
            dump(&scratch.out()),
            data,
            "restored tree differs from the archive"
        );
        assert_canonical(&scratch.out(), stats);
    }
}

const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Xz,
    Compression::Zstd,
    Compression::Bzip2,
    Compression::Gzip,
];

/// Byte 0 picks the compression, bytes 1-2 the NarSize the narinfo claims (in 16-byte units,
/// up to 1 MiB), the rest is the body as served.
pub fn nar_stream(data: &[u8]) {
    let [selector, low, high, body @ ..] = data else {
        return;
    };
    let compression = COMPRESSIONS[usize::from(*selector) % COMPRESSIONS.len()];
    let nar_size = u64::from(u16::from_le_bytes([*low, *high])) * 16;
    let Ok(decompressed) = decompressor(compression, Cursor::new(body.to_vec())) else {
        return;
    };
    let slot = FailureSlot::default();
    let reader = NarReader::new(
        decompressed,
        nar_size,
        Some(HashAlgorithm::Sha1),
        slot.clone(),
        CancellationToken::new(),
        compression,
        "http://cache.invalid/nar/fuzz".to_string(),
    );
    let mut nar = buffered(reader);
    let scratch = scratch();
    let parent = scratch.parent();
    let result = unpack(&mut nar, &parent, OsStr::new(OUT));
    scratch.assert_contained();
    match result {
        Ok(stats) => {
            assert!(!slot.is_set(), "a recorded failure did not stop unpacking");
            let digest = nar.into_inner().finish();
            // A bomb cannot get past the size the narinfo states.
            assert!(digest.size <= nar_size, "{} > {nar_size}", digest.size);
            let dumped = dump(&scratch.out());
            assert_eq!(dumped.len() as u64, digest.size);
            let sha256: [u8; 32] = Sha256::digest(&dumped).into();
            assert_eq!(
                sha256, digest.sha256,
                "hashed bytes are not the unpacked ones"
            );
            assert_canonical(&scratch.out(), stats);
        }
        Err(error) => {
            let _ = error.to_string();
            if let Some(cause) = slot.take() {
                let _ = cause.to_string();
            }
        }
    }
}

fn dump(path: &Path) -> Vec<u8> {
    let mut dumped = Vec::new();
    encode_path(&mut dumped, path, CaseHack::Disabled).expect("cannot dump the restored tree");
    dumped
}

/// Nix's canonical metadata on every object, and counts that match the tree.
fn assert_canonical(root: &Path, stats: UnpackStats) {
    let mut seen = UnpackStats::default();
    walk(root, &mut seen);
    assert_eq!(seen, stats, "unpack stats do not match the tree");
}

fn walk(path: &Path, seen: &mut UnpackStats) {
    let meta = fs::symlink_metadata(path).expect("restored object");
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        seen.symlinks += 1;
    } else if meta.is_dir() {
        assert_eq!(mode, 0o555, "{}", path.display());
        seen.directories += 1;
        for entry in fs::read_dir(path).expect("restored directory") {
            walk(&entry.expect("entry").path(), seen);
        }
    } else {
        assert!(meta.is_file(), "{} is neither", path.display());
        assert!(
            mode == 0o444 || mode == 0o555,
            "{} has mode {mode:o}",
            path.display()
        );
        seen.files += 1;
    }
    assert_eq!(meta.mtime(), 1, "{}", path.display());
}
