//! Restores a NAR stream to disk, strictly and already canonical.
//!
//! The grammar (magic, tokens, padding, sorted unique names, no `.`/`..`/`/`/NUL, depth,
//! trailing bytes) is checked by the cachix `nix-archive` decoder; this file only turns its
//! events into filesystem objects. Everything is created relative to directory descriptors
//! opened with `O_NOFOLLOW`, so a symlink in the archive can never redirect a later write, and
//! each object gets Nix's canonical metadata as it is finished: regular files 0444 (0555 when
//! executable), directories 0555, mtime 1.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix_archive::nar::{decode_events_reader, Event, ReadEvent};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT};

/// Nix's `mtimeStore`: every store object has modification time 1.
const STORE_MTIME: Timestamps = Timestamps {
    // Nix leaves the access time alone.
    last_access: Timespec {
        tv_sec: 0,
        tv_nsec: UTIME_OMIT,
    },
    last_modification: Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    },
};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("malformed nar: {0}")]
    Nar(nix_archive::nar::Error),
    /// The stream feeding the decoder failed (network, decompression, size limit); the reader
    /// that failed knows why.
    #[error("reading the nar stream: {0}")]
    Read(io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// Inside the object being unpacked; empty for its root.
        path: PathBuf,
        source: io::Error,
    },
}

/// Unpacks the NAR read from `reader` as `name` inside the directory `parent`.
///
/// On error, whatever was created is left for the caller to remove (it owns `name`).
pub fn unpack<R: Read>(
    reader: &mut R,
    parent: &File,
    name: &OsStr,
) -> Result<UnpackStats, UnpackError> {
    let mut visitor = Visitor {
        parent,
        root_name: name.to_os_string(),
        directories: Vec::new(),
        names: Vec::new(),
        stats: UnpackStats::default(),
        failure: None,
    };
    let result = decode_events_reader(reader, |event| visitor.visit(event));
    if let Some(failure) = visitor.failure.take() {
        return Err(failure);
    }
    match result {
        Ok(()) => Ok(visitor.stats),
        Err(nix_archive::nar::Error::Io(error)) => Err(UnpackError::Read(error)),
        Err(error) => Err(UnpackError::Nar(error)),
    }
}

struct Visitor<'p> {
    parent: &'p File,
    root_name: OsString,
    /// Open descriptors of the directories being filled, innermost last.
    directories: Vec<File>,
    /// Names from the root to the current object, for error messages.
    names: Vec<OsString>,
    stats: UnpackStats,
    /// A local write failure, kept apart from decoder errors so it is not reported as a
    /// malformed archive or a network problem.
    failure: Option<UnpackError>,
}

impl Visitor<'_> {
    fn visit<R: Read + ?Sized>(
        &mut self,
        event: ReadEvent<'_, R>,
    ) -> Result<(), nix_archive::nar::Error> {
        match event {
            Event::DirectoryStart { name } => {
                let directory = self
                    .create_directory(name)
                    .map_err(|e| self.fail(name, e))?;
                self.directories.push(directory);
                self.enter(name);
                self.stats.directories += 1;
            }
            Event::DirectoryEnd { name } => {
                let directory = self
                    .directories
                    .pop()
                    .unwrap_or_else(|| unreachable!("the decoder balances directory events"));
                // Last, so nothing created inside changes the time again; 0555 only now, so
                // creating children never needed write permission bypass.
                let finished = rustix::fs::fchmod(&directory, Mode::from_raw_mode(0o555))
                    .and_then(|()| rustix::fs::futimens(&directory, &STORE_MTIME))
                    .map_err(io::Error::from);
                self.leave(name);
                finished.map_err(|e| self.fail(name, e))?;
            }
            Event::Regular {
                name,
                executable,
                mut contents,
            } => {
                let file = self.create_regular(name).map_err(|e| self.fail(name, e))?;
                let mut writer = TrackedWriter { file, error: None };
                if let Err(error) = contents.copy_to(&mut writer) {
                    return Err(match writer.error.take() {
                        Some(write_error) => self.fail(name, write_error),
                        // The read side failed: let the decoder report it as such.
                        None => nix_archive::nar::Error::Io(error),
                    });
                }
                let mode = if executable { 0o555 } else { 0o444 };
                rustix::fs::fchmod(&writer.file, Mode::from_raw_mode(mode))
                    .and_then(|()| rustix::fs::futimens(&writer.file, &STORE_MTIME))
                    .map_err(|e| self.fail(name, e.into()))?;
                self.stats.files += 1;
            }
            Event::Symlink { name, target } => {
                self.create_symlink(name, target)
                    .map_err(|e| self.fail(name, e))?;
                self.stats.symlinks += 1;
            }
        }
        Ok(())
    }

    /// The directory to create `name` in, and the name to use there.
    fn place<'a>(&'a self, name: Option<&'a [u8]>) -> (&'a File, &'a OsStr) {
        match (name, self.directories.last()) {
            (Some(name), Some(directory)) => (directory, OsStr::from_bytes(name)),
            (None, _) => (self.parent, &self.root_name),
            (Some(_), None) => unreachable!("the decoder emits named entries only in directories"),
        }
    }

    fn create_directory(&self, name: Option<&[u8]>) -> io::Result<File> {
        let (parent, name) = self.place(name);
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    fn create_regular(&self, name: Option<&[u8]>) -> io::Result<File> {
        let (parent, name) = self.place(name);
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    fn create_symlink(&self, name: Option<&[u8]>, target: &[u8]) -> io::Result<()> {
        let (parent, name) = self.place(name);
        rustix::fs::symlinkat(OsStr::from_bytes(target), parent, name)?;
        rustix::fs::utimensat(parent, name, &STORE_MTIME, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    fn enter(&mut self, name: Option<&[u8]>) {
        if let Some(name) = name {
            self.names.push(OsStr::from_bytes(name).to_os_string());
        }
    }

    fn leave(&mut self, name: Option<&[u8]>) {
        if name.is_some() {
            self.names.pop();
        }
    }

    /// Records a local failure at `name` and returns the error that stops the decoder.
    fn fail(&mut self, name: Option<&[u8]>, source: io::Error) -> nix_archive::nar::Error {
        let mut path: PathBuf = self.names.iter().collect();
        if let Some(name) = name {
            if !matches!(self.names.last(), Some(last) if last.as_bytes() == name) {
                path.push(OsStr::from_bytes(name));
            }
        }
        self.failure
            .get_or_insert(UnpackError::Write { path, source });
        nix_archive::nar::Error::Io(io::Error::other("unpacking stopped by a local write error"))
    }
}

/// Remembers a write error so that `copy_to`'s mixed read/write error can be told apart.
struct TrackedWriter {
    file: File,
    error: Option<io::Error>,
}

impl Write for TrackedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).inspect_err(|error| {
            self.error = Some(io::Error::new(error.kind(), error.to_string()));
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    /// Writes NAR tokens by hand, so tests can also write archives no encoder would.
    #[derive(Default)]
    struct Nar(Vec<u8>);

    impl Nar {
        fn token(mut self, bytes: &[u8]) -> Self {
            self.0
                .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            self.0.extend_from_slice(bytes);
            let pad = (8 - bytes.len() % 8) % 8;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }
        fn tokens(self, tokens: &[&[u8]]) -> Self {
            tokens.iter().fold(self, |nar, t| nar.token(t))
        }
        fn start() -> Self {
            Nar::default().token(b"nix-archive-1")
        }
    }

    fn regular(nar: Nar, contents: &[u8], executable: bool) -> Nar {
        let nar = nar.tokens(&[b"(", b"type", b"regular"]);
        let nar = if executable {
            nar.tokens(&[b"executable", b""])
        } else {
            nar
        };
        nar.tokens(&[b"contents", contents, b")"])
    }

    fn entry(nar: Nar, name: &[u8], node: impl FnOnce(Nar) -> Nar) -> Nar {
        node(nar.tokens(&[b"entry", b"(", b"name", name, b"node"])).token(b")")
    }

    fn dir(nar: Nar, children: impl FnOnce(Nar) -> Nar) -> Nar {
        children(nar.tokens(&[b"(", b"type", b"directory"])).token(b")")
    }

    fn symlink(nar: Nar, target: &[u8]) -> Nar {
        nar.tokens(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    fn unpack_bytes(bytes: &[u8], parent: &Path) -> Result<UnpackStats, UnpackError> {
        let dir = File::open(parent).unwrap();
        unpack(&mut &bytes[..], &dir, OsStr::new("out"))
    }

    fn sample() -> Vec<u8> {
        dir(Nar::start(), |n| {
            let n = entry(n, b"bin", |n| {
                dir(n, |n| {
                    entry(n, b"hello", |n| regular(n, b"#!/bin/sh\n", true))
                })
            });
            let n = entry(n, b"empty", |n| regular(n, b"", false));
            let n = entry(n, b"escape", |n| symlink(n, b"/etc"));
            entry(n, b"lib", |n| {
                dir(n, |n| {
                    let n = entry(n, b"data", |n| regular(n, b"seven b", false));
                    entry(n, b"up", |n| symlink(n, b"../bin"))
                })
            })
        })
        .0
    }

    #[test]
    fn unpacks_a_tree_with_canonical_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let stats = unpack_bytes(&sample(), tmp.path()).unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                files: 3,
                directories: 3,
                symlinks: 2
            }
        );
        let out = tmp.path().join("out");
        let mode = |p: &str| {
            std::fs::symlink_metadata(out.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(""), 0o555);
        assert_eq!(mode("bin"), 0o555);
        assert_eq!(mode("bin/hello"), 0o555);
        assert_eq!(mode("empty"), 0o444);
        assert_eq!(mode("lib/data"), 0o444);
        assert_eq!(std::fs::read(out.join("lib/data")).unwrap(), b"seven b");
        assert_eq!(
            std::fs::read_link(out.join("escape")).unwrap(),
            Path::new("/etc")
        );
        for p in [
            "",
            "bin",
            "bin/hello",
            "empty",
            "escape",
            "lib",
            "lib/data",
            "lib/up",
        ] {
            let meta = std::fs::symlink_metadata(out.join(p)).unwrap();
            assert_eq!(meta.mtime(), 1, "{p}");
        }
        // Restored bytes re-encode to exactly the archive (what `nix-store --dump` would do).
        let mut again = Vec::new();
        nix_archive::nar::encode_path(&mut again, &out, nix_archive::nar::CaseHack::Disabled)
            .unwrap();
        assert_eq!(again, sample());
    }

    #[test]
    fn a_root_file_or_symlink_becomes_the_named_object() {
        let tmp = tempfile::tempdir().unwrap();
        unpack_bytes(&regular(Nar::start(), b"x", true).0, tmp.path()).unwrap();
        let meta = std::fs::metadata(tmp.path().join("out")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o555);

        let tmp = tempfile::tempdir().unwrap();
        unpack_bytes(&symlink(Nar::start(), b"/nix/store/x").0, tmp.path()).unwrap();
        assert_eq!(
            std::fs::read_link(tmp.path().join("out")).unwrap(),
            Path::new("/nix/store/x")
        );
    }

    #[test]
    fn never_writes_through_a_symlink_it_created() {
        // A symlink named "a" to a directory outside, then a directory entry "a" again is
        // caught as a duplicate; and a directory is never entered through a symlink because
        // children are created relative to the descriptor of the directory itself.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().as_os_str().as_bytes().to_vec();
        let nar = dir(Nar::start(), |n| {
            let n = entry(n, b"a", |n| symlink(n, &target));
            entry(n, b"a", |n| {
                dir(n, |n| entry(n, b"pwned", |n| regular(n, b"x", false)))
            })
        });
        let tmp = tempfile::tempdir().unwrap();
        let error = unpack_bytes(&nar.0, tmp.path()).unwrap_err();
        assert!(matches!(error, UnpackError::Nar(_)), "{error}");
        assert!(!outside.path().join("pwned").exists());
    }

    #[test]
    fn hostile_archives_are_rejected() {
        let one = |name: &[u8]| {
            dir(Nar::start(), |n| {
                entry(n, name, |n| regular(n, b"x", false))
            })
            .0
        };
        let two = |a: &[u8], b: &[u8]| {
            dir(Nar::start(), |n| {
                let n = entry(n, a, |n| regular(n, b"x", false));
                entry(n, b, |n| regular(n, b"y", false))
            })
            .0
        };
        let mut bad_padding = regular(Nar::start(), b"abc", false).0;
        // The contents token "abc" is padded with five zeros right after it.
        let at = bad_padding.windows(3).position(|w| w == b"abc").unwrap();
        bad_padding[at + 3] = 1;
        let mut trailing = sample();
        trailing.extend_from_slice(&[0; 8]);
        let mut deep = Nar::start();
        for _ in 0..100 {
            deep = deep.tokens(&[
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"d",
                b"node",
            ]);
        }
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty name", one(b"")),
            ("dot", one(b".")),
            ("dot-dot", one(b"..")),
            ("slash", one(b"a/b")),
            ("nul", one(b"a\0b")),
            ("unsorted", two(b"b", b"a")),
            ("duplicate", two(b"a", b"a")),
            ("non-zero padding", bad_padding),
            ("trailing bytes", trailing),
            ("excessive nesting", deep.0),
            ("truncated", sample()[..sample().len() - 16].to_vec()),
            ("bad magic", Nar::default().token(b"nix-archive-2").0),
        ];
        for (what, bytes) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let error = unpack_bytes(&bytes, tmp.path()).unwrap_err();
            assert!(matches!(error, UnpackError::Nar(_)), "{what}: {error}");
        }
    }

    #[test]
    fn local_write_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        // The root name is taken already.
        std::fs::create_dir(tmp.path().join("out")).unwrap();
        let error = unpack_bytes(&sample(), tmp.path()).unwrap_err();
        assert!(
            matches!(&error, UnpackError::Write { path, .. } if path.as_os_str().is_empty()),
            "{error}"
        );
    }

    #[test]
    fn read_errors_are_reported_as_such() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("connection reset"))
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        let error = unpack(&mut Failing, &dir, OsStr::new("out")).unwrap_err();
        assert!(matches!(error, UnpackError::Read(_)), "{error}");
    }
}
