//! A binary cache in a directory of this node (`file:///srv/cache`): a shared filesystem (NFS)
//! or a cache synced to the node ahead of time. Only where the bytes come from differs from an
//! HTTP cache: the documents and NARs are files opened read-only, and everything after that
//! (signatures, hashes, unpacking, install) is the same pipeline.
//!
//! No retries: a local read that fails fails the same way again, and an NFS server that stalls
//! is waited for by the kernel, not by us.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use reqwest::Url;
use rustix::fs::{Mode, OFlags};

use crate::fetch_error::FetchCause;
use crate::nar_download::FailureSlot;

/// The directory of a `file://` substituter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCache {
    root: PathBuf,
}

impl FileCache {
    /// Parses `file:///absolute/path` (percent-encoded like any URL). The problem, if any, is
    /// returned as text for [`crate::FetchError::InvalidSubstituter`].
    pub fn from_url(url: &str) -> Result<FileCache, String> {
        let after_scheme = url
            .get(..5)
            .filter(|scheme| scheme.eq_ignore_ascii_case("file:"))
            .map(|_| &url[5..])
            .ok_or_else(|| "not a file URL".to_string())?;
        // Look at what was written: the URL parser silently turns `file:srv/cache` into
        // `file:///srv/cache`, and Nix reads `file://srv/cache` as the relative `srv/cache`.
        if let Some(authority_and_path) = after_scheme.strip_prefix("//") {
            let authority = authority_and_path
                .split(['/', '?', '#'])
                .next()
                .unwrap_or_default();
            if !authority.is_empty() {
                return Err(format!(
                    "a file cache is a directory of this node, but the URL names the host \
                     {authority:?}; write file:///absolute/path (three slashes)"
                ));
            }
            if !authority_and_path.starts_with('/') {
                return Err("the URL names no directory; write file:///absolute/path".into());
            }
        } else if !after_scheme.starts_with('/') {
            return Err(format!(
                "the directory {after_scheme:?} is relative; write file:///absolute/path"
            ));
        }
        let parsed = Url::parse(url).map_err(|e| e.to_string())?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(
                "query parameters and fragments are not read by nixlet; set priority and \
                 trusted_keys in the substituter's entry instead"
                    .into(),
            );
        }
        let root = parsed
            .to_file_path()
            .map_err(|()| "the URL is not a local file path".to_string())?;
        if root.as_os_str().as_bytes().contains(&0) {
            return Err("the path contains a NUL byte".into());
        }
        Ok(FileCache { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache's file `name` (`nix-cache-info`, `<hash>.narinfo`), which must exist.
    pub async fn read_document(&self, name: &str) -> Result<Vec<u8>, FetchCause> {
        let path = self.root.join(name);
        run_blocking(self.root.clone(), move || {
            let mut file =
                open_regular(&path).map_err(|source| file_error("open", &path, source))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|source| file_error("read", &path, source))?;
            Ok(bytes)
        })
        .await
    }

    /// [`FileCache::read_document`], `None` when there is no such file, which for a narinfo
    /// means "not in this cache", as a 404 does over HTTP.
    pub async fn read_optional_document(&self, name: &str) -> Result<Option<Vec<u8>>, FetchCause> {
        match self.read_document(name).await {
            Err(FetchCause::CacheFile { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Where the NAR a narinfo's `URL` names is. The URL is not signed, so it must stay inside
    /// the cache directory: Nix's file caches only ever write `nar/<hash>.nar[.ext]`.
    pub fn nar_path(&self, nar_url: &str) -> Result<PathBuf, FetchCause> {
        let relative = Path::new(nar_url);
        let inside = !nar_url.is_empty()
            && !nar_url.contains("://")
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(FetchCause::NarOutsideCache {
                url: nar_url.to_string(),
            });
        }
        Ok(self.root.join(relative))
    }

    /// Opens the NAR file at `path` (from [`FileCache::nar_path`]). A missing file is an
    /// error, not an absence: the narinfo said the cache has it.
    pub async fn open_nar(&self, path: &Path) -> Result<File, FetchCause> {
        let path = path.to_path_buf();
        run_blocking(self.root.clone(), move || {
            open_regular(&path).map_err(|source| file_error("open", &path, source))
        })
        .await
    }
}

/// Opens `path` read-only, refusing anything but a regular file (symlinks are followed: a
/// synced cache may use them). Opened non-blocking so that a FIFO planted in the cache cannot
/// hang the fetch; for regular files the flag changes nothing.
fn open_regular(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn file_error(action: &'static str, path: &Path, source: io::Error) -> FetchCause {
    FetchCause::CacheFile {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs filesystem work off the async workers: an NFS read can block for a long time.
async fn run_blocking<T: Send + 'static>(
    root: PathBuf,
    work: impl FnOnce() -> Result<T, FetchCause> + Send + 'static,
) -> Result<T, FetchCause> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(file_error(
                "read",
                &root,
                io::Error::other(join.to_string()),
            ))
        })
}

/// A NAR file as the compressed byte stream of one fetch: reports each read's size to
/// `on_bytes` and records a read failure, naming the file, before the decoders above it turn
/// it into a bare `io::Error`.
pub struct FileBody<F> {
    file: File,
    path: PathBuf,
    on_bytes: F,
    failure: FailureSlot,
}

impl<F: Fn(u64)> FileBody<F> {
    pub fn new(file: File, path: PathBuf, on_bytes: F, failure: FailureSlot) -> Self {
        FileBody {
            file,
            path,
            on_bytes,
            failure,
        }
    }
}

impl<F: Fn(u64)> Read for FileBody<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file.read(buf) {
            Ok(read) => {
                (self.on_bytes)(read as u64);
                Ok(read)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => Err(error),
            Err(error) => {
                let returned = io::Error::new(error.kind(), error.to_string());
                self.failure
                    .record(|| file_error("read", &self.path, error));
                Err(returned)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(url: &str) -> Result<PathBuf, String> {
        FileCache::from_url(url).map(|cache| cache.root)
    }

    #[test]
    fn a_file_url_names_an_absolute_local_directory() {
        assert_eq!(root("file:///srv/cache").unwrap(), Path::new("/srv/cache"));
        assert_eq!(root("FILE:///srv/cache").unwrap(), Path::new("/srv/cache"));
        assert_eq!(root("file:/srv/cache").unwrap(), Path::new("/srv/cache"));
        assert_eq!(
            root("file:///mnt/nix%20cache/caf%C3%A9").unwrap(),
            Path::new("/mnt/nix cache/café")
        );
        // Unencoded spaces are what an operator types; they mean the same.
        assert_eq!(
            root("file:///mnt/nix cache").unwrap(),
            Path::new("/mnt/nix cache")
        );
    }

    #[test]
    fn relative_hostful_and_odd_file_urls_are_refused_with_the_reason() {
        assert_eq!(
            root("file://srv/cache").unwrap_err(),
            "a file cache is a directory of this node, but the URL names the host \"srv\"; \
             write file:///absolute/path (three slashes)"
        );
        assert!(root("file://nfs.example.org/export/cache")
            .unwrap_err()
            .contains("names the host \"nfs.example.org\""));
        assert!(root("file://localhost/srv/cache")
            .unwrap_err()
            .contains("names the host \"localhost\""));
        assert_eq!(
            root("file:srv/cache").unwrap_err(),
            "the directory \"srv/cache\" is relative; write file:///absolute/path"
        );
        assert_eq!(
            root("file://").unwrap_err(),
            "the URL names no directory; write file:///absolute/path"
        );
        assert!(root("file:///srv/cache?priority=10")
            .unwrap_err()
            .starts_with("query parameters and fragments are not read by nixlet"));
        assert_eq!(
            root("file:///srv/ca%00che").unwrap_err(),
            "the path contains a NUL byte"
        );
        assert_eq!(
            root("http://cache.example.org").unwrap_err(),
            "not a file URL"
        );
    }

    #[test]
    fn nar_urls_stay_inside_the_cache_directory() {
        let cache = FileCache::from_url("file:///srv/cache").unwrap();
        assert_eq!(
            cache.nar_path("nar/abc.nar.xz").unwrap(),
            Path::new("/srv/cache/nar/abc.nar.xz")
        );
        for outside in [
            "../etc/shadow",
            "nar/../../etc/shadow",
            "/etc/shadow",
            "http://cdn.example.org/nar/abc.nar",
            "",
        ] {
            let error = cache.nar_path(outside).unwrap_err();
            assert!(
                matches!(error, FetchCause::NarOutsideCache { .. }),
                "{outside}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn documents_are_read_missing_ones_are_absent_and_other_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_file_path(dir.path()).unwrap();
        let cache = FileCache::from_url(url.as_str()).unwrap();
        std::fs::write(dir.path().join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
        assert_eq!(
            cache.read_document("nix-cache-info").await.unwrap(),
            b"StoreDir: /nix/store\n"
        );
        assert!(cache
            .read_optional_document("x.narinfo")
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            cache
                .read_document("x.narinfo")
                .await
                .unwrap_err()
                .to_string(),
            format!(
                "cannot open {}: No such file or directory (os error 2)",
                dir.path().join("x.narinfo").display()
            )
        );

        std::fs::create_dir(dir.path().join("dir.narinfo")).unwrap();
        let error = cache
            .read_optional_document("dir.narinfo")
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot open {}: not a regular file",
                dir.path().join("dir.narinfo").display()
            )
        );

        let fifo = dir.path().join("fifo.narinfo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        // Would hang forever without O_NONBLOCK: nobody writes to the FIFO.
        assert!(cache
            .read_optional_document("fifo.narinfo")
            .await
            .unwrap_err()
            .to_string()
            .ends_with("not a regular file"));

        let missing = cache.nar_path("nar/missing.nar.xz").unwrap();
        assert_eq!(
            cache.open_nar(&missing).await.unwrap_err().to_string(),
            format!(
                "cannot open {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn a_failed_read_is_recorded_with_the_file() {
        // Reading a directory's fd fails with EISDIR: a stand-in for EIO from a sick disk.
        let dir = tempfile::tempdir().unwrap();
        let slot = FailureSlot::default();
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&counted);
        let mut body = FileBody::new(
            File::open(dir.path()).unwrap(),
            dir.path().join("nar/x.nar"),
            move |bytes| {
                counter.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            },
            slot.clone(),
        );
        assert!(body.read_to_end(&mut Vec::new()).is_err());
        let cause = slot.take().unwrap();
        // Reading the same file again gives the same answer: no retry with backoff.
        assert!(!cause.is_transient());
        assert_eq!(
            cause.to_string(),
            format!(
                "cannot read {}: Is a directory (os error 21)",
                dir.path().join("nar/x.nar").display()
            )
        );

        let file = dir.path().join("nar.bin");
        std::fs::write(&file, [7u8; 1000]).unwrap();
        let counter = std::sync::Arc::clone(&counted);
        let mut body = FileBody::new(
            File::open(&file).unwrap(),
            file,
            move |bytes| {
                counter.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            },
            FailureSlot::default(),
        );
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert_eq!(out, [7u8; 1000]);
        assert_eq!(counted.load(std::sync::atomic::Ordering::Relaxed), 1000);
    }
}
