//! How a run ends in every scenario that uses the host store: the pods are removed as the
//! kubelet removes them, the store is checked for invalid paths, `nixlet gc` runs (so trees and
//! unrooted paths go), and what is left compared with the baseline census is a leak.

use nixlet_e2e::census::Census;

use crate::rel_node::RelNode;
use crate::results::RunRecord;
use crate::store_check::invalid_paths;

/// The census runs are compared with: taken on a node whose pods came and went once (so the
/// directories nixlet makes on first use exist) and after `nixlet gc`.
pub fn baseline(node: &RelNode) -> anyhow::Result<Census> {
    if let Some(problem) = node.remove_all_pods().failed.into_iter().next() {
        anyhow::bail!("removing the pods before the baseline: {problem}");
    }
    let _ = node.settled_census();
    node.nixlet_gc()?;
    Ok(node.settled_census())
}

/// Removes every pod, then records invalid paths among `paths` and leaks since `baseline`.
/// Temporaries, locks and roots are counted before `nixlet gc` (it sweeps stale temporaries, and
/// pods must not need it to clean up after themselves); store trees after it (trees outlive
/// their pods by design until GC).
pub fn close_run(node: &RelNode, paths: &[String], baseline: &Census, run: &mut RunRecord) {
    remove_pods(node, run);
    let mut after = node.settled_census();
    run.invalid_paths.extend(invalid_paths(paths));
    if let Err(e) = node.nixlet_gc() {
        run.fail(format!("{e:#}"));
    }
    after.trees = node.census().trees;
    run.leaks.extend(after.leaks_since(baseline));
}

/// Like [`close_run`] without `nixlet gc`, for runs that must find the store as the last one
/// left it (warm starts): compared with a baseline taken the same way.
pub fn close_run_warm(node: &RelNode, paths: &[String], baseline: &Census, run: &mut RunRecord) {
    remove_pods(node, run);
    let after = node.settled_census();
    run.invalid_paths.extend(invalid_paths(paths));
    run.leaks.extend(after.leaks_since(baseline));
}

/// Removes every pod as the kubelet does (retrying); a removal that only went on a retry is
/// noted, one that never went fails the run.
pub fn remove_pods(node: &RelNode, run: &mut RunRecord) {
    let removal = node.remove_all_pods();
    for problem in removal.retried.iter().take(1) {
        run.note(format!("a removal needed the kubelet's retry: {problem}"));
    }
    for problem in removal.failed {
        run.fail(format!("removing the pods: {problem}"));
    }
}
