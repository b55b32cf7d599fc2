//! `nixlet gc`: gathers what `gc_plan` decides over (the Nix database's graph, nixlet's install
//! record, the roots, the filesystem's free space) and carries the plan out.
//!
//! In batches of at most [`GC_BATCH`] paths, each under Nix's GC lock held exclusively (no fetch
//! and no other GC runs meanwhile) and each planned anew under that lock, so that a Create
//! waits for one batch, not for the whole collection, and a root it adds between batches is
//! honoured by the next plan. For each planned path in turn: take its path lock (skip it if a Nix process holds it), remove its database
//! rows in one transaction (refused if a valid path still references it), move it to a
//! temporary name (so the final name vanishes at once, and a crash leaves only an entry that
//! `sweep_stale_entries` removes), delete it, and drop its install-record row. Before the paths,
//! the store trees of views no root points to go (`tree_sweep.rs`). A dry run takes no lock and
//! changes nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nixlet_manifest::{StorePath, STORE_DIR};

use crate::fetch_error::LocalError;
use crate::gc_exclusive_lock::ExclusiveGcLock;
use crate::gc_plan::{self, Budget, GcInput, GcPlan, Victim};
use crate::gc_roots::{self, RootDirs, RootsError};
use crate::install::{temp_name, StoreDir};
use crate::install_record::{now_secs, InstallRecord, RecordError};
use crate::invalidation::Invalidated;
use crate::path_lock::{lock_path, PathLock};
use crate::registration::NixDbWriter;
use crate::store_graph::StoreGraph;
use crate::store_tree::TreeError;
use crate::tree_sweep::{sweep_trees, TreeSweep};
use crate::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    pub nix_db: PathBuf,
    /// `/nix/var/nix`: `gc.lock`, `profiles/`, `temproots/`.
    pub nix_state_dir: PathBuf,
    /// The tree of roots to honour, `/nix/var/nix/gcroots` (the shim's roots are below it).
    pub gcroots_dir: PathBuf,
    /// nixlet's record of the paths it installed.
    pub install_record: PathBuf,
    /// Per-environment store trees (`store_tree.rs`); those of unrooted views are removed.
    pub trees_dir: Option<PathBuf>,
    pub max_store_bytes: Option<u64>,
    pub min_free_bytes: Option<u64>,
    /// Paths used more recently than this are kept.
    pub grace: Duration,
    pub dry_run: bool,
    /// Paths deleted per hold of the exclusive lock ([`GC_BATCH`]).
    pub batch_paths: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Roots(#[from] RootsError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("cannot read the free space of {}: {source}", path.display())]
    FreeSpace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A planned path that stayed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: StorePath,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub plan: GcPlan,
    /// Deleted (or, in a dry run, to be deleted), in order.
    pub deleted: Vec<Victim>,
    pub skipped: Vec<Skipped>,
    /// Sum of NarSize of `deleted`.
    pub freed_bytes: u64,
    pub store_bytes_before: u64,
    pub free_bytes_before: u64,
    /// Measured again after deleting (equal to before in a dry run).
    pub free_bytes_after: u64,
    /// Store paths the roots point to.
    pub roots: usize,
    /// Leftovers of killed fetches removed from the store (temporary entries, lock files).
    pub swept_entries: usize,
    /// Store trees removed (or to be removed) because no root points to their view.
    pub trees: TreeSweep,
    /// How many times the exclusive GC lock was taken (one plan and deletion batch each).
    pub batches: usize,
}

/// Paths deleted per hold of the exclusive GC lock: deleting one takes a few milliseconds (a
/// database transaction, a rename, a recursive removal), so a Create waits well under a second.
pub const GC_BATCH: usize = 64;

pub fn collect_garbage(options: &GcOptions) -> Result<GcReport, GcError> {
    if options.dry_run {
        return collect_batch(options, usize::MAX);
    }
    let mut total: Option<GcReport> = None;
    loop {
        let lock = ExclusiveGcLock::acquire(&options.nix_state_dir, |path| {
            tracing::info!(lock = %path.display(), "waiting for running fetches and nix to release the gc lock");
        })
        .map_err(|source| GcError::Lock {
            path: options.nix_state_dir.join("gc.lock"),
            source,
        })?;
        let limit = options.batch_paths.max(1);
        let batch = collect_batch(options, limit)?;
        drop(lock);
        // A batch that did not fill up had nothing more to delete; one that deleted nothing
        // would plan the same kept paths again.
        let done = batch.deleted.len() + batch.skipped.len() < limit || batch.deleted.is_empty();
        total = Some(match total {
            None => batch,
            Some(total) => total.merge(batch),
        });
        if done {
            return Ok(total.expect("one batch ran"));
        }
    }
}

impl GcReport {
    /// This batch's report followed by `later`'s: the first plan and measurements before,
    /// everything done by both, the last measurement after.
    fn merge(mut self, later: GcReport) -> GcReport {
        self.deleted.extend(later.deleted);
        self.skipped.extend(later.skipped);
        self.freed_bytes += later.freed_bytes;
        self.swept_entries += later.swept_entries;
        self.trees.removed.extend(later.trees.removed);
        self.trees.leftovers += later.trees.leftovers;
        self.trees.freed_bytes += later.trees.freed_bytes;
        self.free_bytes_after = later.free_bytes_after;
        self.batches += later.batches;
        self
    }
}

/// One plan and at most `limit` deletions; the caller holds the exclusive lock (or dry-runs).
fn collect_batch(options: &GcOptions, limit: usize) -> Result<GcReport, GcError> {
    let graph = StoreGraph::load(&options.nix_db)?;
    let roots = gc_roots::find_roots(&RootDirs::of_state_dir(
        &options.nix_state_dir,
        options.gcroots_dir.clone(),
    ))?;
    let mut record = InstallRecord::open_existing(&options.install_record)?;
    let installed = match &record {
        Some(record) => record
            .all()?
            .into_iter()
            .map(|row| (row.path, row.last_used))
            .collect(),
        None => Default::default(),
    };
    let free_bytes_before = free_bytes(Path::new(STORE_DIR))?;
    let now = now_secs();
    let input = GcInput {
        budget: Budget {
            store_bytes: graph.total_nar_size(),
            free_bytes: free_bytes_before,
            max_store_bytes: options.max_store_bytes,
            min_free_bytes: options.min_free_bytes,
        },
        valid: graph.paths,
        installed,
        roots,
        now,
        grace_secs: options.grace.as_secs(),
    };
    let plan = gc_plan::plan(&input);
    tracing::info!(
        roots = input.roots.len(),
        installed = input.installed.len(),
        live = plan.live.len(),
        recent = plan.recent.len(),
        referenced = plan.referenced.len(),
        planned = plan.delete.len(),
        planned_bytes = plan.bytes,
        dry_run = options.dry_run,
        "gc plan"
    );
    let mut report = GcReport {
        dry_run: options.dry_run,
        deleted: Vec::new(),
        skipped: Vec::new(),
        freed_bytes: 0,
        store_bytes_before: input.budget.store_bytes,
        free_bytes_before,
        free_bytes_after: free_bytes_before,
        roots: input.roots.len(),
        swept_entries: 0,
        trees: TreeSweep::default(),
        batches: 1,
        plan,
    };
    // Trees first: they hold links to store files, so removing them first is what lets the
    // paths deleted below give their blocks back.
    if let Some(trees_dir) = &options.trees_dir {
        report.trees = sweep_trees(trees_dir, &input.roots, options.dry_run)?;
    }
    if options.dry_run {
        report.deleted = report.plan.delete.clone();
        report.freed_bytes = report.plan.bytes;
        return Ok(report);
    }
    let Some(record) = record.as_mut() else {
        report.swept_entries = crate::install::sweep_stale_entries(Path::new(STORE_DIR))?;
        return Ok(report);
    };

    // What a root reaches is in use now: when its container goes, its age counts from here.
    let live: Vec<StorePath> = report.plan.live.iter().cloned().collect();
    record.touch(&live, now)?;
    for stale in &report.plan.stale {
        tracing::info!(path = %stale, "forgetting a path that is no longer in the store");
        record.forget(stale)?;
    }

    let store = StoreDir::open(STORE_DIR)?;
    let mut db = NixDbWriter::open(&options.nix_db)?;
    for victim in report
        .plan
        .delete
        .iter()
        .take(limit)
        .cloned()
        .collect::<Vec<_>>()
    {
        match delete_path(&store, &mut db, &victim.path)? {
            None => {
                record.forget(&victim.path)?;
                tracing::info!(path = %victim.path, nar_size = victim.nar_size, last_used = victim.last_used, "deleted store path");
                report.freed_bytes += victim.nar_size;
                report.deleted.push(victim);
            }
            Some(reason) => {
                tracing::warn!(path = %victim.path, %reason, "kept a planned store path");
                report.skipped.push(Skipped {
                    path: victim.path,
                    reason,
                });
            }
        }
    }
    report.swept_entries = crate::install::sweep_stale_entries(Path::new(STORE_DIR))?;
    report.free_bytes_after = free_bytes(Path::new(STORE_DIR))?;
    Ok(report)
}

/// Deletes one path; `Some(reason)` when it had to stay.
fn delete_path(
    store: &StoreDir,
    db: &mut NixDbWriter,
    path: &StorePath,
) -> Result<Option<String>, GcError> {
    let lock_file = lock_path(store.path(), path);
    let Some(lock) =
        PathLock::try_acquire_at(&lock_file).map_err(|e| LocalError::io("lock", &lock_file, e))?
    else {
        return Ok(Some("another process holds its lock".into()));
    };
    match db.invalidate(path)? {
        Invalidated::Removed => {}
        Invalidated::NotRegistered => return Ok(Some("it is no longer registered".into())),
        Invalidated::StillReferenced { by } => {
            return Ok(Some(format!("{by} still references it")))
        }
    }
    let temporary = temp_name(path);
    // A leftover of a killed fetch or GC under our temporary name is dead (we hold the lock).
    store.remove(OsStr::new(&temporary))?;
    match rustix::fs::renameat(store.fd(), path.base_name(), store.fd(), temporary.as_str()) {
        Ok(()) => store.remove(OsStr::new(&temporary))?,
        // Registered but already gone from disk: the rows were all that was left.
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(LocalError::io("move away", path.to_path_buf(), e.into()).into());
        }
    }
    drop(lock);
    Ok(None)
}

fn free_bytes(dir: &Path) -> Result<u64, GcError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| GcError::FreeSpace {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
