//! Live counters of a closure fetch, for a progress bar or periodic log lines: the caller keeps
//! an `Arc<FetchProgress>`, passes it to [`crate::Fetcher::fetch_closure_with_progress`], and
//! reads [`FetchProgress::snapshot`] whenever it redraws.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct FetchProgress {
    paths_to_fetch: AtomicUsize,
    nar_bytes_to_fetch: AtomicU64,
    paths_done: AtomicUsize,
    bytes_downloaded: AtomicU64,
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressSnapshot {
    /// Paths of the closure that were missing (known once the walk of the closure is done).
    pub paths_to_fetch: usize,
    /// Their uncompressed size, from the narinfos.
    pub nar_bytes_to_fetch: u64,
    /// Missing paths now installed (by this fetch or by another process).
    pub paths_done: usize,
    /// Compressed bytes received so far, failed attempts included.
    pub bytes_downloaded: u64,
}

impl FetchProgress {
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            paths_to_fetch: self.paths_to_fetch.load(Ordering::Relaxed),
            nar_bytes_to_fetch: self.nar_bytes_to_fetch.load(Ordering::Relaxed),
            paths_done: self.paths_done.load(Ordering::Relaxed),
            bytes_downloaded: self.bytes_downloaded.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn planned(&self, paths: usize, nar_bytes: u64) {
        self.paths_to_fetch.fetch_add(paths, Ordering::Relaxed);
        self.nar_bytes_to_fetch
            .fetch_add(nar_bytes, Ordering::Relaxed);
    }

    pub(crate) fn path_done(&self) {
        self.paths_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn downloaded(&self, bytes: u64) {
        self.bytes_downloaded.fetch_add(bytes, Ordering::Relaxed);
    }
}
