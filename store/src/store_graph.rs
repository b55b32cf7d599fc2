//! The store as the Nix database describes it, read in bulk: every valid path with its NarSize,
//! registration time and references. GC needs the whole graph (who references what, what the
//! store weighs); `nixlet env closure` needs the sizes of some paths.
//!
//! Two queries over the whole tables, rather than one per path: a node's store has thousands
//! of paths, and GC holds Nix's GC lock while it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nixlet_manifest::StorePath;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::gc_plan::PathFacts;
use crate::StoreError;

const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the database says about one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPathInfo {
    pub nar_size: Option<u64>,
    /// Seconds since the epoch.
    pub registration_time: i64,
}

/// Every valid path of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGraph {
    pub paths: BTreeMap<StorePath, PathFacts>,
    /// Rows whose path does not parse (never written by Nix or nixlet); they are left alone.
    pub malformed: usize,
}

impl StoreGraph {
    pub fn load(db_path: &Path) -> Result<StoreGraph, StoreError> {
        let conn = open(db_path)?;
        let fail = |source| StoreError::Database {
            path: db_path.to_path_buf(),
            source,
        };
        let mut graph = StoreGraph::default();
        let mut by_id: HashMap<i64, StorePath> = HashMap::new();
        {
            let mut statement = conn
                .prepare("SELECT id, path, narSize FROM ValidPaths")
                .map_err(fail)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(fail)?;
            for row in rows {
                let (id, path, nar_size) = row.map_err(fail)?;
                let Ok(path) = StorePath::parse(&path) else {
                    graph.malformed += 1;
                    continue;
                };
                by_id.insert(id, path.clone());
                graph.paths.insert(
                    path,
                    PathFacts {
                        nar_size: nar_size.unwrap_or(0).max(0) as u64,
                        references: BTreeSet::new(),
                    },
                );
            }
        }
        let mut statement = conn
            .prepare("SELECT referrer, reference FROM Refs")
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
            .map_err(fail)?;
        for row in rows {
            let (referrer, reference) = row.map_err(fail)?;
            if let (Some(referrer), Some(reference)) = (by_id.get(&referrer), by_id.get(&reference))
            {
                let reference = reference.clone();
                if let Some(facts) = graph.paths.get_mut(referrer) {
                    facts.references.insert(reference);
                }
            }
        }
        Ok(graph)
    }

    /// Sum of NarSize over all valid paths: what the store weighs, as Nix counts it.
    pub fn total_nar_size(&self) -> u64 {
        self.paths.values().map(|f| f.nar_size).sum()
    }
}

/// NarSize and registration time of each of `paths`; `None` for a path that is not valid.
pub fn path_infos(
    db_path: &Path,
    paths: &[StorePath],
) -> Result<Vec<(StorePath, Option<ValidPathInfo>)>, StoreError> {
    let conn = open(db_path)?;
    let fail = |source| StoreError::Database {
        path: db_path.to_path_buf(),
        source,
    };
    let mut statement = conn
        .prepare("SELECT narSize, registrationTime FROM ValidPaths WHERE path = ?1")
        .map_err(fail)?;
    let mut infos = Vec::with_capacity(paths.len());
    for path in paths {
        let info = statement
            .query_row([path.to_string()], |row| {
                Ok(ValidPathInfo {
                    nar_size: row.get::<_, Option<i64>>(0)?.map(|n| n.max(0) as u64),
                    registration_time: row.get(1)?,
                })
            })
            .optional()
            .map_err(fail)?;
        infos.push((path.clone(), info));
    }
    Ok(infos)
}

fn open(db_path: &Path) -> Result<Connection, StoreError> {
    let path: PathBuf = db_path.to_path_buf();
    if !path.exists() {
        return Err(StoreError::NoDatabase { path });
    }
    let fail = |source| StoreError::Database {
        path: db_path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-app";
    const LIB: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-lib";

    #[test]
    fn loads_sizes_and_references_and_ignores_malformed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(&format!(
            "create table ValidPaths (id integer primary key autoincrement not null, \
             path text unique not null, hash text not null, registrationTime integer not null, \
             deriver text, narSize integer, ultimate integer, sigs text, ca text);
             create table Refs (referrer integer not null, reference integer not null, \
             primary key (referrer, reference));
             insert into ValidPaths (id, path, hash, registrationTime, narSize) values
               (1, '{APP}', 'sha256:0', 7, 100), (2, '{LIB}', 'sha256:0', 8, 23),
               (3, 'garbage', 'sha256:0', 9, 5);
             insert into Refs values (1, 1), (1, 2), (3, 2);"
        ))
        .unwrap();
        let graph = StoreGraph::load(&db).unwrap();
        let app = StorePath::parse(APP).unwrap();
        let lib = StorePath::parse(LIB).unwrap();
        assert_eq!(graph.malformed, 1);
        assert_eq!(graph.total_nar_size(), 123);
        assert_eq!(
            graph.paths[&app].references,
            BTreeSet::from([app.clone(), lib.clone()])
        );
        assert!(graph.paths[&lib].references.is_empty());

        let other = StorePath::parse("/nix/store/2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-x").unwrap();
        let infos = path_infos(&db, &[lib.clone(), other.clone()]).unwrap();
        assert_eq!(
            infos,
            vec![
                (
                    lib,
                    Some(ValidPathInfo {
                        nar_size: Some(23),
                        registration_time: 8
                    })
                ),
                (other, None)
            ]
        );
    }
}
