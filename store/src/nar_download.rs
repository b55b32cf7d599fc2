//! The NAR byte stream: HTTP body → decompression → sha256 and size, as one `Read` that the
//! unpacker consumes on a blocking thread while the body is still arriving.
//!
//! A failure deep in the chain surfaces to the NAR decoder as a bare `io::Error`; the first
//! layer that fails records what really happened in a [`FailureSlot`] so the error names the
//! right cause (network, decompression, size) instead of "malformed nar".

use std::io::{self, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use nix_derivation::{HashAlgorithm, NixHash, NixHasher};
use reqwest::Response;
use sha2::{Digest, Sha256};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use crate::fetch_error::FetchCause;
use crate::http_client::classify;
use crate::narinfo::Compression;
use crate::speed_floor::{SpeedCheck, SpeedFloor};

/// The first cause of a stream failure, shared by the layers of one download.
#[derive(Debug, Clone, Default)]
pub struct FailureSlot(Arc<Mutex<Option<FetchCause>>>);

impl FailureSlot {
    pub fn record(&self, cause: impl FnOnce() -> FetchCause) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(cause());
        }
    }

    pub fn is_set(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    pub fn take(&self) -> Option<FetchCause> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The compressed body of `response` as a blocking `Read`, reporting each chunk's size to
/// `on_bytes`; a body slower than `floor` fails as a timeout.
/// Must be created inside the tokio runtime and read on a blocking thread. Cancelling `cancel`
/// ends the stream at once, even while it waits for a stalled server.
pub fn body_reader(
    response: Response,
    on_bytes: impl Fn(u64) + Send + 'static,
    failure: FailureSlot,
    cancel: CancellationToken,
    floor: SpeedFloor,
) -> impl Read + Send + 'static {
    let url = response.url().to_string();
    let mut speed = (floor.min_bytes_per_sec > 0).then(|| SpeedCheck::new(floor, Instant::now()));
    let stream = response
        .bytes_stream()
        .take_until(Box::pin(cancel.cancelled_owned()))
        .map(move |item| match item {
            Ok(chunk) => {
                on_bytes(chunk.len() as u64);
                let checked = speed
                    .as_mut()
                    .map_or(Ok(()), |s| s.arrived(chunk.len() as u64, Instant::now()));
                match checked {
                    Ok(()) => Ok(chunk),
                    Err(slow) => {
                        failure.record(|| FetchCause::Timeout {
                            url: url.clone(),
                            message: format!("download too slow: {slow}"),
                        });
                        Err(io::Error::other(slow))
                    }
                }
            }
            Err(error) => {
                failure.record(|| classify(&url, &error));
                Err(io::Error::other(error))
            }
        });
    SyncIoBridge::new(StreamReader::new(stream))
}

/// Wraps `compressed` in the decoder for `compression`.
pub fn decompressor(
    compression: Compression,
    compressed: impl Read + Send + 'static,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::None => Box::new(compressed),
        // Multi-stream decoders: `xz -T`, `pbzip2` and friends write concatenated streams, and
        // the single-stream decoders would silently stop after the first.
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(compressed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(compressed)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(compressed)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
    })
}

/// What the NAR stream hashed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarDigest {
    pub sha256: [u8; 32],
    pub size: u64,
    /// The NAR hashed with a content address's algorithm when that is not sha256.
    pub extra: Option<NixHash>,
}

/// The decompressed NAR: hashes and counts every byte, refuses to go past the size the narinfo
/// states (so a decompression bomb cannot fill the disk), and stops when cancelled.
pub struct NarReader<R> {
    inner: R,
    sha256: Sha256,
    extra: Option<NixHasher>,
    size: u64,
    limit: u64,
    failure: FailureSlot,
    cancel: CancellationToken,
    /// For messages.
    compression: Compression,
    url: String,
}

impl<R: Read> NarReader<R> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: R,
        limit: u64,
        extra_algorithm: Option<HashAlgorithm>,
        failure: FailureSlot,
        cancel: CancellationToken,
        compression: Compression,
        url: String,
    ) -> Self {
        NarReader {
            inner,
            sha256: Sha256::new(),
            extra: extra_algorithm
                .filter(|a| *a != HashAlgorithm::Sha256)
                .map(NixHasher::new),
            size: 0,
            limit,
            failure,
            cancel,
            compression,
            url,
        }
    }

    pub fn finish(self) -> NarDigest {
        NarDigest {
            sha256: self.sha256.finalize().into(),
            size: self.size,
            extra: self.extra.map(NixHasher::finalize),
        }
    }
}

impl<R: Read> Read for NarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: readers retry that kind forever.
            return Err(io::Error::other("fetch cancelled"));
        }
        let read = match self.inner.read(buf) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Err(error),
            Err(error) => {
                // If the transport failed, it recorded that first; otherwise the compressed
                // data itself is bad.
                self.failure.record(|| FetchCause::Decompress {
                    compression: self.compression,
                    url: self.url.clone(),
                    message: error.to_string(),
                });
                return Err(error);
            }
        };
        let bytes = &buf[..read];
        self.size += read as u64;
        if self.size > self.limit {
            self.failure.record(|| FetchCause::NarSizeMismatch {
                expected: self.limit,
                actual: format!("more than {}", self.limit),
            });
            return Err(io::Error::other("nar is larger than its narinfo says"));
        }
        self.sha256.update(bytes);
        if let Some(extra) = &mut self.extra {
            extra.update(bytes);
        }
        Ok(read)
    }
}

/// A buffered NAR reader; the decoder reads tokens in small pieces.
pub fn buffered<R: Read>(reader: R) -> BufReader<R> {
    BufReader::with_capacity(256 * 1024, reader)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn reader(
        bytes: Vec<u8>,
        compression: Compression,
        limit: u64,
    ) -> (NarReader<Box<dyn Read + Send>>, FailureSlot) {
        let slot = FailureSlot::default();
        let inner = decompressor(compression, io::Cursor::new(bytes)).unwrap();
        (
            NarReader::new(
                inner,
                limit,
                Some(HashAlgorithm::Sha1),
                slot.clone(),
                CancellationToken::new(),
                compression,
                "http://cache/nar/x".into(),
            ),
            slot,
        )
    }

    fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
        match compression {
            Compression::None => data.to_vec(),
            Compression::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn every_compression_round_trips_and_is_hashed() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        for compression in [
            Compression::None,
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
            Compression::Gzip,
        ] {
            let (mut nar, slot) = reader(compress(compression, &data), compression, 100_000);
            let mut out = Vec::new();
            nar.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{compression}");
            let digest = nar.finish();
            assert_eq!(digest.sha256, expected);
            assert_eq!(digest.size, 100_000);
            assert_eq!(
                digest.extra.unwrap(),
                nix_derivation::hash_bytes(HashAlgorithm::Sha1, &data)
            );
            assert!(!slot.is_set());
        }
    }

    #[test]
    fn concatenated_xz_streams_are_read_whole() {
        let mut both = compress(Compression::Xz, b"first ");
        both.extend(compress(Compression::Xz, b"second"));
        let (mut nar, _) = reader(both, Compression::Xz, 100);
        let mut out = Vec::new();
        nar.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"first second");
    }

    #[test]
    fn more_bytes_than_the_narinfo_states_are_refused() {
        let (mut nar, slot) = reader(vec![0; 1000], Compression::None, 999);
        assert!(nar.read_to_end(&mut Vec::new()).is_err());
        assert_eq!(
            slot.take().unwrap().to_string(),
            "nar size mismatch: narinfo says 999 bytes, the download has more than 999"
        );
    }

    #[test]
    fn corrupt_or_truncated_compressed_data_is_a_decompression_error() {
        for compression in [
            Compression::Xz,
            Compression::Zstd,
            Compression::Bzip2,
            Compression::Gzip,
        ] {
            let whole = compress(compression, &[7; 50_000]);
            let truncated = whole[..whole.len() / 2].to_vec();
            let (mut nar, slot) = reader(truncated, compression, 50_000);
            assert!(nar.read_to_end(&mut Vec::new()).is_err(), "{compression}");
            let cause = slot.take().unwrap();
            assert!(
                matches!(cause, FetchCause::Decompress { .. }),
                "{compression}: {cause}"
            );
        }
    }
}
