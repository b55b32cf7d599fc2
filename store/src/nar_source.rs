//! Where one NAR's compressed bytes come from: an HTTP response body or a file of a local cache.
//! This is the only place the two kinds of cache differ once a path is planned; decompression,
//! hashing, unpacking and installing take either as the same blocking `Read`.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use reqwest::{Response, Url};
use tokio_util::sync::CancellationToken;

use crate::file_cache::FileBody;
use crate::nar_download::{body_reader, FailureSlot};
use crate::speed_floor::SpeedFloor;

/// Where a narinfo's NAR is, resolved once per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarLocation {
    Http(Url),
    File(PathBuf),
}

/// For messages: the URL, or the file's path.
impl fmt::Display for NarLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NarLocation::Http(url) => write!(f, "{url}"),
            NarLocation::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A NAR opened for one attempt.
pub enum NarSource {
    Http(Response),
    File { file: std::fs::File, path: PathBuf },
}

impl NarSource {
    /// The compressed bytes as a blocking `Read`, reporting each chunk's size to `on_bytes`
    /// and recording a transport failure in `failure`. Must be created inside the tokio
    /// runtime and read on a blocking thread.
    pub fn into_reader(
        self,
        on_bytes: impl Fn(u64) + Send + 'static,
        failure: FailureSlot,
        cancel: CancellationToken,
        floor: SpeedFloor,
    ) -> NarBody<impl Read + Send + 'static, impl Read + Send + 'static> {
        match self {
            NarSource::Http(response) => {
                NarBody::Http(body_reader(response, on_bytes, failure, cancel, floor))
            }
            // No cancellation here: the NAR reader above checks it before every read, and a
            // local read cannot be interrupted anyway.
            NarSource::File { file, path } => {
                NarBody::File(FileBody::new(file, path, on_bytes, failure))
            }
        }
    }
}

/// Either body, without boxing: the HTTP path pays one predictable branch per read of a
/// decoder's buffer, and no copy or allocation.
pub enum NarBody<H, F> {
    Http(H),
    File(F),
}

impl<H: Read, F: Read> Read for NarBody<H, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            NarBody::Http(body) => body.read(buf),
            NarBody::File(body) => body.read(buf),
        }
    }
}
