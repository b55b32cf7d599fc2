//! Read-only queries against Nix's SQLite database (`/nix/var/nix/db/db.sqlite`).
//!
//! Reading the database directly, rather than running `nix-store --query`, keeps Create free of
//! subprocesses and works on nodes that have the database but no Nix CLI on the shim's PATH.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nixlet_manifest::StorePath;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::db_queries;
use crate::path_info::{parse_nar_hash, PathInfo};
use crate::StoreError;

/// Host Nix may hold a write lock while it registers paths; wait rather than fail a Create.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct NixDb {
    path: PathBuf,
    conn: Connection,
}

impl NixDb {
    pub fn open(path: impl Into<PathBuf>) -> Result<NixDb, StoreError> {
        let path = path.into();
        if !path.exists() {
            return Err(StoreError::NoDatabase { path });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Database {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| StoreError::Database {
                path: path.clone(),
                source,
            })?;
        Ok(NixDb { path, conn })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether Nix registered `path` as valid.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        db_queries::is_registered(&self.conn, path).map_err(|source| self.db_error(source))
    }

    /// The paths `path` references directly, as registered.
    pub fn references(&self, path: &StorePath) -> Result<Vec<StorePath>, StoreError> {
        db_queries::references(&self.conn, path)
            .map_err(|source| self.db_error(source))?
            .into_iter()
            .map(|value| self.parse_path(value))
            .collect()
    }

    /// How many paths Nix has registered (`nixlet doctor` reads it to show the database works).
    pub fn valid_path_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM ValidPaths", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|count| u64::try_from(count).unwrap_or(0))
            .map_err(|source| self.db_error(source))
    }

    /// What the store weighs: the sum of NarSize over valid paths (what `[gc] max_store_bytes`
    /// bounds, and the agent's `nixlet_store_size_bytes`).
    pub fn store_nar_bytes(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(narSize), 0) FROM ValidPaths",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|sum| u64::try_from(sum).unwrap_or(0))
            .map_err(|source| self.db_error(source))
    }

    /// The registration of `path`: NAR hash, NAR size and references.
    pub fn path_info(&self, path: &StorePath) -> Result<PathInfo, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT hash, narSize FROM ValidPaths WHERE path = ?1",
                [path.to_string()],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)),
            )
            .optional()
            .map_err(|source| self.db_error(source))?;
        let Some((hash, nar_size)) = row else {
            return Err(StoreError::NotValid { path: path.clone() });
        };
        let nar_hash = parse_nar_hash(&hash).ok_or_else(|| StoreError::MalformedNarHash {
            db: self.path.clone(),
            path: path.clone(),
            value: hash.clone(),
        })?;
        Ok(PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size: nar_size
                .and_then(|size| u64::try_from(size).ok())
                .unwrap_or(0),
            references: self.references(path)?.into_iter().collect(),
        })
    }

    /// Every path reachable from `roots` through references, roots included, sorted.
    /// Fails on the first root that is not registered.
    pub fn closure(&self, roots: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<StorePath> = Vec::new();
        for root in roots {
            if !self.is_valid(root)? {
                return Err(StoreError::NotValid { path: root.clone() });
            }
            if seen.insert(root.clone()) {
                pending.push(root.clone());
            }
        }
        while let Some(path) = pending.pop() {
            for reference in self.references(&path)? {
                if seen.insert(reference.clone()) {
                    pending.push(reference);
                }
            }
        }
        Ok(seen)
    }

    fn parse_path(&self, value: String) -> Result<StorePath, StoreError> {
        StorePath::parse(&value).map_err(|_| StoreError::MalformedPath {
            db: self.path.clone(),
            value,
        })
    }

    fn db_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12";
    const GLIBC: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-glibc-2.38";
    const LIBGCC: &str = "/nix/store/2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-libgcc-13";

    /// A database with Nix's own schema for the two tables nixlet reads.
    fn fixture_db(dir: &Path, paths: &[&str], refs: &[(&str, &str)]) -> PathBuf {
        let db = dir.join("db.sqlite");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "create table ValidPaths (id integer primary key autoincrement not null, \
             path text unique not null, hash text not null, registrationTime integer not null, \
             deriver text, narSize integer, ultimate integer, sigs text, ca text);
             create table Refs (referrer integer not null, reference integer not null, \
             primary key (referrer, reference));",
        )
        .unwrap();
        for path in paths {
            conn.execute(
                "insert into ValidPaths (path, hash, registrationTime) values (?1, 'sha256:0', 1)",
                [path],
            )
            .unwrap();
        }
        for (from, to) in refs {
            conn.execute(
                "insert into Refs select a.id, b.id from ValidPaths a, ValidPaths b \
                 where a.path = ?1 and b.path = ?2",
                [from, to],
            )
            .unwrap();
        }
        db
    }

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn closure_follows_references_transitively_and_includes_self_references() {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(
            dir.path(),
            &[HELLO, GLIBC, LIBGCC],
            &[
                (HELLO, HELLO),
                (HELLO, GLIBC),
                (GLIBC, LIBGCC),
                (LIBGCC, GLIBC),
            ],
        );
        let closure = NixDb::open(db).unwrap().closure(&[p(HELLO)]).unwrap();
        assert_eq!(
            closure.into_iter().collect::<Vec<_>>(),
            vec![p(HELLO), p(GLIBC), p(LIBGCC)]
        );
    }

    #[test]
    fn path_info_reads_hash_size_and_references() {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(
            dir.path(),
            &[HELLO, GLIBC],
            &[(HELLO, HELLO), (HELLO, GLIBC)],
        );
        let conn = Connection::open(&db).unwrap();
        let hex = "1b8c6e3a4f5d2e7c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";
        conn.execute(
            "update ValidPaths set hash = ?1, narSize = 4242 where path = ?2",
            [format!("sha256:{hex}"), HELLO.to_string()],
        )
        .unwrap();
        drop(conn);
        let db = NixDb::open(db).unwrap();
        assert_eq!(
            db.store_nar_bytes().unwrap(),
            4242,
            "a NULL narSize adds nothing"
        );
        let info = db.path_info(&p(HELLO)).unwrap();
        assert_eq!(hex::encode(info.nar_hash), hex);
        assert_eq!(info.nar_size, 4242);
        assert_eq!(
            info.references.into_iter().collect::<Vec<_>>(),
            vec![p(HELLO), p(GLIBC)]
        );
        // The fixture's placeholder hash "sha256:0" is not a hash: the error names it.
        assert_eq!(
            db.path_info(&p(GLIBC)).unwrap_err().to_string(),
            format!(
                "Nix database {} lists a malformed NAR hash \"sha256:0\" for {GLIBC}",
                dir.path().join("db.sqlite").display()
            )
        );
        assert!(matches!(
            db.path_info(&p(LIBGCC)),
            Err(StoreError::NotValid { .. })
        ));
    }

    #[test]
    fn unregistered_root_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = fixture_db(dir.path(), &[GLIBC], &[]);
        let error = NixDb::open(db).unwrap().closure(&[p(HELLO)]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("store path {HELLO} is not on this node (not registered in the Nix database)")
        );
    }

    #[test]
    fn missing_database_is_a_clear_error() {
        let error = NixDb::open("/nonexistent/db.sqlite").err().unwrap();
        assert_eq!(
            error.to_string(),
            "no Nix database at /nonexistent/db.sqlite: this node cannot tell which store paths are valid"
        );
    }
}
