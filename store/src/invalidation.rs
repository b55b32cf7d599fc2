//! Removing a path's rows from Nix's database before GC deletes it from disk: the inverse of
//! `registration.rs`, as Nix 2.8's `LocalStore::invalidatePath` does it.
//!
//! One transaction per path. The transaction itself refuses when another valid path still
//! references the one to go, whatever the caller planned: a valid path whose reference is gone
//! would break Nix's closure invariant for every later reader. Rows go before the files, so a
//! crash in between leaves an unregistered directory (which the fetcher replaces and Nix's GC
//! removes), never a registered path that is missing.

use nixlet_manifest::StorePath;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::fetch_error::LocalError;
use crate::registration::NixDbWriter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidated {
    /// The rows are gone.
    Removed,
    /// Nothing was registered under that path.
    NotRegistered,
    /// Left as it was: `by` is valid and references the path.
    StillReferenced { by: StorePath },
}

impl NixDbWriter {
    pub fn invalidate(&mut self, path: &StorePath) -> Result<Invalidated, LocalError> {
        let db_path = self.path().to_path_buf();
        let error = |e: rusqlite::Error| LocalError::Database {
            path: db_path.clone(),
            message: format!("cannot invalidate {path}: {e}"),
        };
        let transaction = self
            .connection()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(error)?;
        let id: Option<i64> = transaction
            .query_row(
                "SELECT id FROM ValidPaths WHERE path = ?1",
                [path.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(error)?;
        let Some(id) = id else {
            return Ok(Invalidated::NotRegistered);
        };
        let referrer: Option<String> = transaction
            .query_row(
                "SELECT ValidPaths.path FROM Refs JOIN ValidPaths ON ValidPaths.id = Refs.referrer \
                 WHERE Refs.reference = ?1 AND Refs.referrer != ?1 LIMIT 1",
                [id],
                |row| row.get(0),
            )
            .optional()
            .map_err(error)?;
        if let Some(referrer) = referrer {
            // Rolled back on drop.
            let by = StorePath::parse(&referrer).map_err(|e| LocalError::Database {
                path: db_path.clone(),
                message: format!("{path} is referenced by a malformed path {referrer:?}: {e}"),
            })?;
            return Ok(Invalidated::StillReferenced { by });
        }
        transaction
            .execute("DELETE FROM Refs WHERE referrer = ?1", params![id])
            .map_err(error)?;
        // Present in every schema-10 database, but a database made by hand may lack it.
        let has_outputs: bool = transaction
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'DerivationOutputs'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(error)?
            .is_some();
        if has_outputs {
            transaction
                .execute("DELETE FROM DerivationOutputs WHERE drv = ?1", params![id])
                .map_err(error)?;
        }
        transaction
            .execute("DELETE FROM ValidPaths WHERE id = ?1", params![id])
            .map_err(error)?;
        transaction.commit().map_err(error)?;
        Ok(Invalidated::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::Registration;
    use rusqlite::Connection;

    fn p(name: &str, digit: char) -> StorePath {
        StorePath::parse(&format!(
            "/nix/store/{}-{name}",
            digit.to_string().repeat(32)
        ))
        .unwrap()
    }

    fn register(writer: &mut NixDbWriter, path: &StorePath, references: &[&StorePath]) {
        writer
            .register(&Registration {
                path: path.clone(),
                nar_hash: [1; 32],
                nar_size: 10,
                references: references.iter().map(|r| (*r).clone()).collect(),
                deriver: None,
                signatures: vec![],
                ca: None,
            })
            .unwrap();
    }

    #[test]
    fn rows_go_only_when_nothing_else_references_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE ValidPaths (id integer primary key autoincrement not null, \
                 path text unique not null, hash text not null, registrationTime integer not null, \
                 deriver text, narSize integer, ultimate integer, sigs text, ca text);
                 CREATE TABLE Refs (referrer integer not null, reference integer not null, \
                 primary key (referrer, reference));
                 CREATE TABLE DerivationOutputs (drv integer not null, id text not null, \
                 path text not null, primary key (drv, id));",
            )
            .unwrap();
        std::fs::write(dir.path().join("schema"), "10").unwrap();
        let (lib, app) = (p("lib", '1'), p("app", '2'));
        let mut writer = NixDbWriter::open(&db).unwrap();
        register(&mut writer, &lib, &[&lib]);
        register(&mut writer, &app, &[&app, &lib]);

        assert_eq!(
            writer.invalidate(&lib).unwrap(),
            Invalidated::StillReferenced { by: app.clone() }
        );
        assert!(writer.is_registered(&lib).unwrap());
        // A self-reference does not keep a path.
        assert_eq!(writer.invalidate(&app).unwrap(), Invalidated::Removed);
        assert_eq!(writer.invalidate(&lib).unwrap(), Invalidated::Removed);
        assert_eq!(writer.invalidate(&lib).unwrap(), Invalidated::NotRegistered);
        let rows: i64 = Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT (SELECT count(*) FROM ValidPaths) + (SELECT count(*) FROM Refs)",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
    }
}
