//! Holding the Nix database's write lock, as a long `nix copy` or a GC does: a Create that has
//! moved a fetched path into place waits to register it, which is how the suite catches a shim
//! in that phase. Held for a few seconds at most, since every writer of the host's Nix waits.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::Connection;

pub struct DbWriteLock {
    conn: Connection,
}

impl DbWriteLock {
    /// Opens `db` and begins an immediate transaction (the write lock, readers go on).
    pub fn hold(db: &Path) -> Result<DbWriteLock> {
        let conn = Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        conn.busy_timeout(Duration::from_secs(20))?;
        conn.execute_batch("BEGIN IMMEDIATE")
            .with_context(|| format!("taking the write lock of {}", db.display()))?;
        Ok(DbWriteLock { conn })
    }
}

impl Drop for DbWriteLock {
    fn drop(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}
