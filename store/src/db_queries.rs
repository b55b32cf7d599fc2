//! The read queries on Nix's database that both the read-only view (`NixDb`) and the writer
//! (`NixDbWriter`) need, written once; each caller maps errors into its own type.

use nixlet_manifest::StorePath;
use rusqlite::{Connection, OptionalExtension};

/// Whether Nix registered `path` as valid.
pub(crate) fn is_registered(conn: &Connection, path: &StorePath) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM ValidPaths WHERE path = ?1",
        [path.to_string()],
        |_| Ok(()),
    )
    .optional()
    .map(|row| row.is_some())
}

/// The registered references of `path` as the database spells them (including itself if it
/// refers to itself); the caller parses them, so a malformed row is its error to name.
pub(crate) fn references(conn: &Connection, path: &StorePath) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT target.path FROM Refs \
         JOIN ValidPaths AS source ON Refs.referrer = source.id \
         JOIN ValidPaths AS target ON Refs.reference = target.id \
         WHERE source.path = ?1",
    )?;
    let rows = statement.query_map([path.to_string()], |row| row.get::<_, String>(0))?;
    rows.collect()
}
