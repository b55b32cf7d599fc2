//! Which store paths nixlet put into the store, and when each was last used: nixlet's own
//! SQLite file (`/var/lib/nixlet/installed-paths.sqlite`), the ground truth of `nixlet gc`.
//!
//! The Nix database cannot say who installed a path (nixlet registers the narinfo's signatures,
//! exactly as Nix would), and `nixlet gc` must never delete what host Nix or an operator put
//! there. So the fetcher adds a row for every path it installs, right after registering it, and
//! stamps every path of a closure it was asked for with the time of that request ("last use").
//! A row whose path is gone (host Nix collected it) is stale and dropped by the next GC.
//!
//! SQLite rather than a JSON file: several shims fetch at once, and SQLite gives them atomic,
//! concurrent updates without a lock protocol of our own.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nixlet_manifest::StorePath;
use rusqlite::{params, Connection, TransactionBehavior};

/// The file name inside nixlet's state directory.
pub const INSTALL_RECORD_FILE: &str = "installed-paths.sqlite";

/// Several shims may write at once; each write is tiny, so waiting is always short.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("install record {}: {message}", path.display())]
pub struct RecordError {
    pub path: PathBuf,
    pub message: String,
}

/// One path nixlet installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPath {
    pub path: StorePath,
    /// Seconds since the epoch.
    pub installed_at: i64,
    /// Seconds since the epoch: the last fetch (Create) whose closure held the path, or the last
    /// GC that found it reachable from a root.
    pub last_used: i64,
    /// Where it came from: a substituter URL, or `nix-cli <url>`.
    pub origin: String,
}

pub struct InstallRecord {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for InstallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallRecord")
            .field("path", &self.path)
            .finish()
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl InstallRecord {
    /// Opens the record, creating the file (and its directory, 0700) when missing.
    pub fn open(path: &Path) -> Result<InstallRecord, RecordError> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| error(path, format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let conn = Connection::open(path).map_err(|e| error(path, e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| error(path, e.to_string()))?;
        // WAL: readers (a dry-run GC) never block the shims' writes.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| error(path, e.to_string()))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS InstalledPaths (
                 path text PRIMARY KEY NOT NULL,
                 installedAt integer NOT NULL,
                 lastUsed integer NOT NULL,
                 origin text NOT NULL
             );",
        )
        .map_err(|e| error(path, e.to_string()))?;
        Ok(InstallRecord {
            path: path.to_path_buf(),
            conn,
        })
    }

    /// Opens the record only if it exists: a node where nixlet never installed anything has
    /// nothing for GC to consider, and a dry run must not create files.
    pub fn open_existing(path: &Path) -> Result<Option<InstallRecord>, RecordError> {
        if !path.exists() {
            return Ok(None);
        }
        Self::open(path).map(Some)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that nixlet installed `path`, or, if it is recorded already, that it was used
    /// now (the first install time stays).
    pub fn record_installed(
        &mut self,
        path: &StorePath,
        origin: &str,
        now: i64,
    ) -> Result<(), RecordError> {
        self.conn
            .execute(
                "INSERT INTO InstalledPaths (path, installedAt, lastUsed, origin) \
                 VALUES (?1, ?2, ?2, ?3) \
                 ON CONFLICT(path) DO UPDATE SET \
                 lastUsed = max(lastUsed, excluded.lastUsed), origin = excluded.origin",
                params![path.to_string(), now, origin],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Stamps those of `paths` that nixlet installed with `now`, in one transaction; paths that
    /// nixlet did not install are ignored. Returns how many rows were stamped.
    pub fn touch(&mut self, paths: &[StorePath], now: i64) -> Result<usize, RecordError> {
        let db_path = self.path.clone();
        let fail = |e: rusqlite::Error| error(&db_path, e.to_string());
        let transaction = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let mut touched = 0;
        {
            let mut statement = transaction
                .prepare_cached(
                    "UPDATE InstalledPaths SET lastUsed = ?2 WHERE path = ?1 AND lastUsed < ?2",
                )
                .map_err(fail)?;
            for path in paths {
                touched += statement
                    .execute(params![path.to_string(), now])
                    .map_err(fail)?;
            }
        }
        transaction.commit().map_err(fail)?;
        Ok(touched)
    }

    /// Forgets `path` (deleted by GC, or found gone).
    pub fn forget(&mut self, path: &StorePath) -> Result<(), RecordError> {
        self.conn
            .execute(
                "DELETE FROM InstalledPaths WHERE path = ?1",
                [path.to_string()],
            )
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Every recorded path. A malformed row (edited by hand) is skipped with a warning rather
    /// than stopping GC: it can only make GC keep more.
    pub fn all(&self) -> Result<Vec<InstalledPath>, RecordError> {
        let mut statement = self
            .conn
            .prepare("SELECT path, installedAt, lastUsed, origin FROM InstalledPaths ORDER BY path")
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut installed = Vec::new();
        for row in rows {
            let (path, installed_at, last_used, origin) = row.map_err(|e| self.error(e))?;
            match StorePath::parse(&path) {
                Ok(path) => installed.push(InstalledPath {
                    path,
                    installed_at,
                    last_used,
                    origin,
                }),
                Err(parse) => {
                    tracing::warn!(record = %self.path.display(), value = %path, error = %parse, "skipping a malformed row");
                }
            }
        }
        Ok(installed)
    }

    fn error(&self, e: rusqlite::Error) -> RecordError {
        error(&self.path, e.to_string())
    }
}

/// Opens the record at `file` and records `path` as installed by nixlet now: for paths nixlet
/// creates outside the fetcher, such as the environment view (which references the whole
/// environment, so an unrecorded view would keep its closure from ever being collected).
pub fn note_installed(file: &Path, path: &StorePath, origin: &str) -> Result<(), RecordError> {
    InstallRecord::open(file)?.record_installed(path, origin, now_secs())
}

fn error(path: &Path, message: String) -> RecordError {
    RecordError {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(digit: char, name: &str) -> StorePath {
        StorePath::parse(&format!(
            "/nix/store/{}-{name}",
            digit.to_string().repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn records_touches_and_forgets_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/installed-paths.sqlite");
        assert!(InstallRecord::open_existing(&file).unwrap().is_none());
        let mut record = InstallRecord::open(&file).unwrap();
        let (a, b, host) = (p('1', "a"), p('2', "b"), p('3', "host"));
        record.record_installed(&a, "http://cache", 100).unwrap();
        record.record_installed(&b, "http://cache", 100).unwrap();
        // Only nixlet's paths are stamped; an older stamp never wins over a newer one.
        assert_eq!(record.touch(&[a.clone(), host.clone()], 200).unwrap(), 1);
        assert_eq!(record.touch(std::slice::from_ref(&a), 150).unwrap(), 0);
        record.forget(&b).unwrap();
        // Installing again counts as a use; the first install time stays.
        record.record_installed(&a, "http://cache", 300).unwrap();
        record.record_installed(&a, "http://cache", 250).unwrap();

        let reopened = InstallRecord::open_existing(&file).unwrap().unwrap();
        assert_eq!(
            reopened.all().unwrap(),
            vec![InstalledPath {
                path: a,
                installed_at: 100,
                last_used: 300,
                origin: "http://cache".into(),
            }]
        );
    }

    #[test]
    fn note_installed_creates_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("installed-paths.sqlite");
        note_installed(&file, &p('4', "view"), "environment view").unwrap();
        let all = InstallRecord::open(&file).unwrap().all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].origin, "environment view");
    }

    #[test]
    fn an_unwritable_location_names_the_file() {
        let error = InstallRecord::open(Path::new("/proc/nixlet/installed-paths.sqlite"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("install record /proc/nixlet/installed-paths.sqlite: cannot create"),
            "{error}"
        );
    }
}
