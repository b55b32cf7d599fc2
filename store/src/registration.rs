//! Registering fetched paths in Nix's SQLite database, so host Nix sees them as valid.
//!
//! A direct insert (rather than `nix-store --register-validity`) needs no Nix CLI on the node and
//! keeps the narinfo's signatures and content address, which `nix store verify` then checks. It
//! writes exactly the rows Nix 2.8's `LocalStore::registerValidPath` writes (schema version 10),
//! under Nix's own `big-lock` (shared, as every Nix process holds it) and in one transaction per
//! path, after the path's references are registered.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nixlet_manifest::StorePath;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::db_queries;
use crate::fetch_error::LocalError;

/// The only schema nixlet writes: Nix 2.0 through 2.x.
pub const SUPPORTED_SCHEMA: &str = "10";

/// Host Nix may hold the write lock for a while (a big `nix copy`); wait rather than fail.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// What Nix records about a valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub path: StorePath,
    pub nar_hash: [u8; 32],
    pub nar_size: u64,
    /// Including the path itself when it refers to itself.
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// `name:base64`, as in narinfo `Sig:` lines.
    pub signatures: Vec<String>,
    /// Only set when verified from the bytes (see `trust.rs`).
    pub ca: Option<String>,
}

/// A read-write connection to the Nix database.
pub struct NixDbWriter {
    path: PathBuf,
    conn: Connection,
    _big_lock: File,
}

impl std::fmt::Debug for NixDbWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NixDbWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl NixDbWriter {
    /// Opens `db_path` (`/nix/var/nix/db/db.sqlite`) after checking the schema version next to
    /// it. Blocks while Nix migrates the schema (it then holds `big-lock` exclusively).
    pub fn open(db_path: &Path) -> Result<NixDbWriter, LocalError> {
        let db_dir = db_path.parent().unwrap_or(Path::new("/"));
        let fail = |message: String| LocalError::Database {
            path: db_path.to_path_buf(),
            message,
        };
        let schema_file = db_dir.join("schema");
        let schema = std::fs::read_to_string(&schema_file)
            .map_err(|e| fail(format!("cannot read {}: {e}", schema_file.display())))?;
        if schema.trim() != SUPPORTED_SCHEMA {
            return Err(fail(format!(
                "schema version {} is not supported (nixlet writes version {SUPPORTED_SCHEMA}, \
                 that of nix 2.x)",
                schema.trim()
            )));
        }
        let big_lock_path = db_dir.join("big-lock");
        let big_lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&big_lock_path)
            .map_err(|e| fail(format!("cannot open {}: {e}", big_lock_path.display())))?;
        rustix::fs::flock(&big_lock, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| fail(format!("cannot lock {}: {e}", big_lock_path.display())))?;
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        // Nix's own durability for its database (`fsync-metadata = true` sets `normal`): in WAL
        // mode a commit is not fsynced, a checkpoint is. SQLite's default `full` fsynced every
        // path's commit, which with hundreds of paths per closure was time spent waiting on the
        // disk that Nix itself does not spend.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(e.to_string()))?;
        Ok(NixDbWriter {
            path: db_path.to_path_buf(),
            conn,
            _big_lock: big_lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For the inverse operation, which lives with GC (`invalidation.rs`).
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn is_registered(&self, path: &StorePath) -> Result<bool, LocalError> {
        db_queries::is_registered(&self.conn, path).map_err(|e| self.error(e))
    }

    /// The registered references of `path` (including itself if it refers to itself).
    pub fn references(&self, path: &StorePath) -> Result<Vec<StorePath>, LocalError> {
        db_queries::references(&self.conn, path)
            .map_err(|e| self.error(e))?
            .into_iter()
            .map(|value| {
                StorePath::parse(&value).map_err(|e| LocalError::Database {
                    path: self.path.clone(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Registers one path whose references (other than itself) are registered already.
    pub fn register(&mut self, registration: &Registration) -> Result<(), LocalError> {
        let db_path = self.path.clone();
        let error = |e: rusqlite::Error| LocalError::Database {
            path: db_path.clone(),
            message: e.to_string(),
        };
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(error)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let signatures =
            (!registration.signatures.is_empty()).then(|| registration.signatures.join(" "));
        // `ultimate` stays NULL: a substituted path is not ultimately trusted (Nix writes NULL
        // for false).
        transaction
            .execute(
                "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) \
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7) \
                 ON CONFLICT(path) DO UPDATE SET hash = excluded.hash, \
                 registrationTime = excluded.registrationTime, deriver = excluded.deriver, \
                 narSize = excluded.narSize, ultimate = NULL, sigs = excluded.sigs, ca = excluded.ca",
                params![
                    registration.path.to_string(),
                    format!("sha256:{}", hex::encode(registration.nar_hash)),
                    now,
                    registration.deriver.as_ref().map(|d| d.to_string()),
                    registration.nar_size as i64,
                    signatures,
                    registration.ca,
                ],
            )
            .map_err(error)?;
        let id: i64 = transaction
            .query_row(
                "SELECT id FROM ValidPaths WHERE path = ?1",
                [registration.path.to_string()],
                |row| row.get(0),
            )
            .map_err(error)?;
        for reference in &registration.references {
            let reference_id: Option<i64> = transaction
                .query_row(
                    "SELECT id FROM ValidPaths WHERE path = ?1",
                    [reference.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(error)?;
            let Some(reference_id) = reference_id else {
                // Rolled back on drop: never a path whose closure is not valid.
                return Err(LocalError::Database {
                    path: self.path.clone(),
                    message: format!(
                        "cannot register {}: its reference {reference} is not registered",
                        registration.path
                    ),
                });
            };
            transaction
                .execute(
                    "INSERT OR REPLACE INTO Refs (referrer, reference) VALUES (?1, ?2)",
                    params![id, reference_id],
                )
                .map_err(error)?;
        }
        transaction.commit().map_err(error)
    }

    fn error(&self, e: rusqlite::Error) -> LocalError {
        LocalError::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nix 2.8's schema, as `sqlite3 db.sqlite .schema` prints it on this machine.
    const SCHEMA: &str = "
        CREATE TABLE ValidPaths (
            id integer primary key autoincrement not null, path text unique not null,
            hash text not null, registrationTime integer not null, deriver text,
            narSize integer, ultimate integer, sigs text, ca text);
        CREATE TABLE Refs (referrer integer not null, reference integer not null,
            primary key (referrer, reference),
            foreign key (referrer) references ValidPaths(id) on delete cascade,
            foreign key (reference) references ValidPaths(id) on delete restrict);
        CREATE TABLE DerivationOutputs (drv integer not null, id text not null,
            path text not null, primary key (drv, id),
            foreign key (drv) references ValidPaths(id) on delete cascade);";

    fn fixture(schema_version: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        Connection::open(&db)
            .unwrap()
            .execute_batch(SCHEMA)
            .unwrap();
        std::fs::write(dir.path().join("schema"), schema_version).unwrap();
        (dir, db)
    }

    fn p(name: &str, digit: char) -> StorePath {
        StorePath::parse(&format!(
            "/nix/store/{}-{name}",
            digit.to_string().repeat(32)
        ))
        .unwrap()
    }

    fn registration(path: StorePath, references: &[&StorePath]) -> Registration {
        Registration {
            path,
            nar_hash: [0xab; 32],
            nar_size: 1234,
            references: references.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
            signatures: vec!["k-1:AAAA".into(), "k-2:BBBB".into()],
            ca: None,
        }
    }

    #[test]
    fn registers_rows_as_nix_does_and_the_read_side_sees_them() {
        let (_dir, db) = fixture("10");
        let lib = p("lib", '1');
        let app = p("app", '2');
        let mut writer = NixDbWriter::open(&db).unwrap();
        writer.register(&registration(lib.clone(), &[])).unwrap();
        writer
            .register(&registration(app.clone(), &[&lib, &app]))
            .unwrap();
        assert!(writer.is_registered(&app).unwrap());
        let mut references = writer.references(&app).unwrap();
        references.sort();
        assert_eq!(references, vec![lib.clone(), app.clone()]);

        let (hash, sigs, ultimate): (String, String, Option<i64>) = Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT hash, sigs, ultimate FROM ValidPaths WHERE path = ?1",
                [app.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(hash, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(sigs, "k-1:AAAA k-2:BBBB");
        assert_eq!(ultimate, None);
        // The lead's read-only view agrees.
        let closure = crate::NixDb::open(&db).unwrap().closure(&[app]).unwrap();
        assert_eq!(closure.len(), 2);
    }

    #[test]
    fn a_path_whose_reference_is_missing_is_not_registered() {
        let (_dir, db) = fixture("10");
        let mut writer = NixDbWriter::open(&db).unwrap();
        let app = p("app", '2');
        let error = writer
            .register(&registration(app.clone(), &[&p("lib", '1')]))
            .unwrap_err();
        assert!(
            error.to_string().contains("its reference /nix/store/1111"),
            "{error}"
        );
        assert!(!writer.is_registered(&app).unwrap());
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let (_dir, db) = fixture("7");
        let error = NixDbWriter::open(&db).unwrap_err();
        assert!(
            error.to_string().ends_with(
                "schema version 7 is not supported (nixlet writes version 10, that of nix 2.x)"
            ),
            "{error}"
        );
    }
}
