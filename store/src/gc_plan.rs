//! Which store paths `nixlet gc` deletes, decided over plain values: the valid paths with their
//! sizes and references, the paths nixlet installed with their last use, the roots, the clock
//! and the budget. No I/O here; `gc_sweep` gathers the inputs and carries the plan out.
//!
//! Rules:
//! - only paths nixlet installed are candidates (never host Nix's or an operator's);
//! - nothing reachable from a root is deleted (the closure of every root is live);
//! - nothing used within the grace period is deleted: between the fetch of a closure and the
//!   shim's root for it there is a short window in which nothing else protects it;
//! - a path is deleted only after every valid path that references it is deleted, so the
//!   store never holds a valid path whose reference is gone (Nix's closure invariant);
//! - among the paths deletable at each step, the one used longest ago goes first, until the
//!   bytes freed meet the budget.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use nixlet_manifest::StorePath;

/// What the Nix database says about one valid path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathFacts {
    pub nar_size: u64,
    /// As registered; may include the path itself.
    pub references: BTreeSet<StorePath>,
}

/// How much to free. With neither limit set, every deletable path goes (as
/// `nix-collect-garbage` does); with limits, just enough to meet all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Sum of NarSize over the store's valid paths.
    pub store_bytes: u64,
    /// Free space of the store's filesystem, for an unprivileged writer.
    pub free_bytes: u64,
    /// The store must end at or below this size.
    pub max_store_bytes: Option<u64>,
    /// The filesystem must end with at least this much free.
    pub min_free_bytes: Option<u64>,
}

impl Budget {
    /// Bytes to free: `None` means "everything that may go".
    pub fn bytes_needed(&self) -> Option<u64> {
        if self.max_store_bytes.is_none() && self.min_free_bytes.is_none() {
            return None;
        }
        let over_size = self
            .max_store_bytes
            .map_or(0, |max| self.store_bytes.saturating_sub(max));
        let under_free = self
            .min_free_bytes
            .map_or(0, |min| min.saturating_sub(self.free_bytes));
        Some(over_size.max(under_free))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcInput {
    /// Every valid path of the store.
    pub valid: BTreeMap<StorePath, PathFacts>,
    /// Paths nixlet installed → last use (seconds since the epoch).
    pub installed: BTreeMap<StorePath, i64>,
    /// Paths some GC root points to (valid or not; invalid ones protect nothing).
    pub roots: BTreeSet<StorePath>,
    pub now: i64,
    /// Paths used less than this many seconds ago are kept.
    pub grace_secs: u64,
    pub budget: Budget,
}

/// One path to delete, in plan order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub path: StorePath,
    pub nar_size: u64,
    pub last_used: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcPlan {
    /// Referrers before their references; oldest use first among those free to go.
    pub delete: Vec<Victim>,
    /// Sum of NarSize of `delete`.
    pub bytes: u64,
    /// `None`: no limit was set, so everything deletable was planned.
    pub bytes_needed: Option<u64>,
    /// Nixlet's paths that a root reaches.
    pub live: BTreeSet<StorePath>,
    /// Nixlet's unrooted paths used within the grace period.
    pub recent: BTreeSet<StorePath>,
    /// Nixlet's unrooted paths that a path staying in the store references.
    pub referenced: BTreeSet<StorePath>,
    /// Recorded paths that are no longer valid (host Nix collected them): rows to drop.
    pub stale: BTreeSet<StorePath>,
}

impl GcPlan {
    /// Whether the plan meets the budget (always, when no limit was set).
    pub fn meets_budget(&self) -> bool {
        match self.bytes_needed {
            None => true,
            Some(needed) => self.bytes >= needed,
        }
    }
}

/// Every valid path reachable from `roots` through references, roots included.
pub fn live_paths(
    valid: &BTreeMap<StorePath, PathFacts>,
    roots: &BTreeSet<StorePath>,
) -> BTreeSet<StorePath> {
    let mut live = BTreeSet::new();
    let mut pending: Vec<&StorePath> = roots.iter().filter(|r| valid.contains_key(*r)).collect();
    while let Some(path) = pending.pop() {
        if !live.insert(path.clone()) {
            continue;
        }
        for reference in &valid[path].references {
            if valid.contains_key(reference) && !live.contains(reference) {
                pending.push(reference);
            }
        }
    }
    live
}

pub fn plan(input: &GcInput) -> GcPlan {
    let live_all = live_paths(&input.valid, &input.roots);
    let mut plan = GcPlan {
        bytes_needed: input.budget.bytes_needed(),
        ..GcPlan::default()
    };
    let cutoff = input.now.saturating_sub(input.grace_secs as i64);

    // Candidates: nixlet's valid, unrooted, not recently used paths.
    let mut candidates: BTreeSet<&StorePath> = BTreeSet::new();
    for (path, last_used) in &input.installed {
        if !input.valid.contains_key(path) {
            plan.stale.insert(path.clone());
        } else if live_all.contains(path) {
            plan.live.insert(path.clone());
        } else if *last_used > cutoff {
            plan.recent.insert(path.clone());
        } else {
            candidates.insert(path);
        }
    }

    // Referrers of each candidate, among all valid paths, self-references left out.
    let mut referrers: BTreeMap<&StorePath, Vec<&StorePath>> = BTreeMap::new();
    for (path, facts) in &input.valid {
        for reference in &facts.references {
            if reference != path && candidates.contains(reference) {
                referrers.entry(reference).or_default().push(path);
            }
        }
    }

    // A candidate that a staying path references stays too, and so, in turn, does everything
    // it references.
    let mut staying: Vec<&StorePath> = candidates
        .iter()
        .copied()
        .filter(|c| {
            referrers
                .get(c)
                .is_some_and(|rs| rs.iter().any(|r| !candidates.contains(r)))
        })
        .collect();
    while let Some(path) = staying.pop() {
        if !candidates.remove(path) {
            continue;
        }
        plan.referenced.insert(path.clone());
        for reference in &input.valid[path].references {
            if reference != path && candidates.contains(reference) {
                staying.push(reference);
            }
        }
    }

    // Kahn's order over the deletable set, oldest use first among the paths nothing left in
    // the store references.
    let mut waiting_on: BTreeMap<&StorePath, usize> = candidates
        .iter()
        .map(|c| (*c, referrers.get(c).map_or(0, Vec::len)))
        .collect();
    let mut ready: BinaryHeap<Reverse<(i64, &StorePath)>> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(c, _)| Reverse((input.installed[*c], *c)))
        .collect();
    while let Some(Reverse((last_used, path))) = ready.pop() {
        if plan.bytes_needed.is_some_and(|needed| plan.bytes >= needed) {
            break;
        }
        let nar_size = input.valid[path].nar_size;
        plan.bytes += nar_size;
        plan.delete.push(Victim {
            path: path.clone(),
            nar_size,
            last_used,
        });
        for reference in &input.valid[path].references {
            if reference == path {
                continue;
            }
            if let Some(count) = waiting_on.get_mut(reference) {
                *count -= 1;
                if *count == 0 {
                    ready.push(Reverse((input.installed[reference], reference)));
                }
            }
        }
    }
    plan
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

    /// A store: `(path, size, references)`.
    fn store(paths: &[(&StorePath, u64, &[&StorePath])]) -> BTreeMap<StorePath, PathFacts> {
        paths
            .iter()
            .map(|(path, size, refs)| {
                (
                    (*path).clone(),
                    PathFacts {
                        nar_size: *size,
                        references: refs.iter().map(|r| (*r).clone()).collect(),
                    },
                )
            })
            .collect()
    }

    fn input(
        valid: BTreeMap<StorePath, PathFacts>,
        installed: &[(&StorePath, i64)],
        roots: &[&StorePath],
    ) -> GcInput {
        GcInput {
            budget: Budget {
                store_bytes: valid.values().map(|f| f.nar_size).sum(),
                free_bytes: 1_000,
                max_store_bytes: Some(0),
                min_free_bytes: None,
            },
            valid,
            installed: installed.iter().map(|(p, t)| ((*p).clone(), *t)).collect(),
            roots: roots.iter().map(|r| (*r).clone()).collect(),
            now: 10_000,
            grace_secs: 0,
        }
    }

    fn deleted(plan: &GcPlan) -> Vec<String> {
        plan.delete
            .iter()
            .map(|v| v.path.name().to_string())
            .collect()
    }

    #[test]
    fn budgets_ask_for_the_larger_shortfall_or_everything() {
        let mut budget = Budget {
            store_bytes: 100,
            free_bytes: 30,
            max_store_bytes: None,
            min_free_bytes: None,
        };
        assert_eq!(budget.bytes_needed(), None);
        budget.max_store_bytes = Some(80);
        assert_eq!(budget.bytes_needed(), Some(20));
        budget.min_free_bytes = Some(60);
        assert_eq!(budget.bytes_needed(), Some(30));
        budget.max_store_bytes = Some(500);
        budget.min_free_bytes = Some(10);
        assert_eq!(budget.bytes_needed(), Some(0));
    }

    #[test]
    fn rooted_closures_and_foreign_paths_stay_and_the_rest_goes() {
        let (root_view, app, lib, old, host) = (
            p('1', "view"),
            p('2', "app"),
            p('3', "lib"),
            p('4', "old"),
            p('5', "host"),
        );
        let valid = store(&[
            (&root_view, 1, &[&app]),
            (&app, 10, &[&app, &lib]),
            (&lib, 100, &[]),
            (&old, 1000, &[&old]),
            (&host, 5, &[]),
        ]);
        let plan = plan(&input(
            valid,
            &[(&root_view, 1), (&app, 1), (&lib, 1), (&old, 1)],
            &[&root_view],
        ));
        assert_eq!(deleted(&plan), vec!["old"]);
        assert_eq!(plan.bytes, 1000);
        assert_eq!(plan.live.len(), 3);
        // 1116 bytes asked for by a zero budget; only 1000 may go.
        assert_eq!(plan.bytes_needed, Some(1116));
        assert!(!plan.meets_budget());
    }

    #[test]
    fn referrers_go_before_their_references_and_oldest_use_first_otherwise() {
        let (app, lib, a, b) = (p('1', "app"), p('2', "lib"), p('3', "a"), p('4', "b"));
        let valid = store(&[
            (&app, 1, &[&lib]),
            (&lib, 1, &[]),
            (&a, 1, &[]),
            (&b, 1, &[]),
        ]);
        // lib was used before anything else, but app (used at 30) still references it.
        let plan = plan(&input(
            valid,
            &[(&app, 30), (&lib, 5), (&a, 20), (&b, 10)],
            &[],
        ));
        assert_eq!(deleted(&plan), vec!["b", "a", "app", "lib"]);
    }

    #[test]
    fn a_path_that_a_staying_path_references_is_kept_with_its_closure() {
        let (host_app, lib, dep, mine) = (
            p('1', "host-app"),
            p('2', "lib"),
            p('3', "dep"),
            p('4', "mine"),
        );
        let valid = store(&[
            (&host_app, 1, &[&lib]),
            (&lib, 1, &[&dep]),
            (&dep, 1, &[]),
            (&mine, 1, &[&dep]),
        ]);
        let plan = plan(&input(valid, &[(&lib, 1), (&dep, 1), (&mine, 1)], &[]));
        assert_eq!(deleted(&plan), vec!["mine"]);
        assert_eq!(
            plan.referenced.iter().map(|p| p.name()).collect::<Vec<_>>(),
            vec!["lib", "dep"]
        );
    }

    #[test]
    fn the_budget_stops_deletion_and_recent_or_gone_paths_are_reported() {
        let (a, b, c, recent, gone) = (
            p('1', "a"),
            p('2', "b"),
            p('3', "c"),
            p('4', "recent"),
            p('5', "gone"),
        );
        let valid = store(&[
            (&a, 40, &[]),
            (&b, 40, &[]),
            (&c, 40, &[]),
            (&recent, 40, &[]),
        ]);
        let mut gc = input(
            valid,
            &[(&a, 3), (&b, 1), (&c, 2), (&recent, 9_990), (&gone, 1)],
            &[],
        );
        gc.grace_secs = 60;
        gc.budget.max_store_bytes = Some(100);
        let planned = plan(&gc);
        // 160 bytes in the store, 100 allowed: two 40-byte paths, the two used longest ago.
        assert_eq!(planned.bytes_needed, Some(60));
        assert_eq!(deleted(&planned), vec!["b", "c"]);
        assert!(planned.meets_budget());
        assert_eq!(planned.recent, BTreeSet::from([recent.clone()]));
        assert_eq!(planned.stale, BTreeSet::from([gone]));

        // A budget that cannot be met deletes what it can and says so.
        gc.budget.max_store_bytes = Some(0);
        let short = plan(&gc);
        assert_eq!(deleted(&short), vec!["b", "c", "a"]);
        assert!(!short.meets_budget());

        // Free space alone can drive it; already met means nothing to do.
        gc.budget.max_store_bytes = None;
        gc.budget.min_free_bytes = Some(1_030);
        assert_eq!(deleted(&plan(&gc)), vec!["b"]);
        gc.budget.min_free_bytes = Some(1_000);
        assert!(plan(&gc).delete.is_empty());

        // No limit at all: everything deletable.
        gc.budget.min_free_bytes = None;
        assert_eq!(deleted(&plan(&gc)), vec!["b", "c", "a"]);
    }

    #[test]
    fn roots_to_invalid_paths_protect_nothing_and_cycles_through_roots_are_fine() {
        let (a, b, ghost) = (p('1', "a"), p('2', "b"), p('3', "ghost"));
        let valid = store(&[(&a, 1, &[&b]), (&b, 1, &[&a])]);
        let live = live_paths(&valid, &BTreeSet::from([a.clone(), ghost]));
        assert_eq!(live, BTreeSet::from([a, b]));
    }
}
