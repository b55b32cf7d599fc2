//! `nixlet gc`: deletes store paths nixlet installed that no GC root reaches, oldest use first,
//! until the store meets the node config's `[gc]` budget, and says what it freed.

use anyhow::{Context, Result};
use clap::Args;
use nixlet_config::NodeConfig;
use nixlet_store::GcReport;

use crate::fetch_progress_bar::human_bytes;

#[derive(Args)]
pub struct GcCommand {
    /// List what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Collect until the store weighs at most this many bytes (overrides `[gc] max_store_bytes`).
    #[arg(long, value_name = "BYTES")]
    max_store_bytes: Option<u64>,
    /// Collect until the store's filesystem has this many bytes free (overrides
    /// `[gc] min_free_bytes`).
    #[arg(long, value_name = "BYTES")]
    min_free_bytes: Option<u64>,
    /// Keep paths used within this many seconds (overrides `[gc] grace_secs`).
    #[arg(long, value_name = "SECONDS")]
    grace_secs: Option<u64>,
}

impl GcCommand {
    pub fn run(self) -> Result<()> {
        let config = NodeConfig::load()?;
        let mut options = config.gc_options(self.dry_run);
        if self.max_store_bytes.is_some() {
            options.max_store_bytes = self.max_store_bytes;
        }
        if self.min_free_bytes.is_some() {
            options.min_free_bytes = self.min_free_bytes;
        }
        if let Some(grace) = self.grace_secs {
            options.grace = std::time::Duration::from_secs(grace);
        }
        let report = nixlet_store::collect_garbage(&options).context("garbage collection")?;
        for line in report_lines(&report, nixlet_store::install_record::now_secs()) {
            println!("{line}");
        }
        Ok(())
    }
}

/// What GC did (or would do), one line per path, then what stayed and the total.
pub fn report_lines(report: &GcReport, now: i64) -> Vec<String> {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let mut lines: Vec<String> = report
        .deleted
        .iter()
        .map(|victim| {
            format!(
                "{verb} {} ({}, last used {})",
                victim.path,
                human_bytes(victim.nar_size),
                age(now - victim.last_used)
            )
        })
        .collect();
    for skipped in &report.skipped {
        lines.push(format!("kept {}: {}", skipped.path, skipped.reason));
    }
    for tree in &report.trees.removed {
        lines.push(format!(
            "{verb} store tree {} (no root points to its view; {})",
            tree.path.display(),
            human_bytes(tree.freed_bytes)
        ));
    }
    let trees = &report.trees;
    if !trees.removed.is_empty() || trees.kept > 0 || trees.leftovers > 0 {
        // Tree files are links to store files: only directories, and files whose store path
        // is gone, come back.
        lines.push(format!(
            "store trees: {} removed, {} in use kept, {} interrupted builds removed; {} {} \
             (trees share their files with the store)",
            trees.removed.len(),
            trees.kept,
            trees.leftovers,
            if report.dry_run {
                "would free"
            } else {
                "freed"
            },
            human_bytes(trees.freed_bytes)
        ));
    }
    let plan = &report.plan;
    lines.push(format!(
        "kept {} of nixlet's paths reachable from {} roots, {} used within the grace period, {} \
         referenced by paths that stay",
        plan.live.len(),
        report.roots,
        plan.recent.len(),
        plan.referenced.len()
    ));
    let freed = if report.dry_run {
        "would free"
    } else {
        "freed"
    };
    lines.push(format!(
        "{freed} {} paths, {} ({} bytes); store was {}, {} free before, {} now",
        report.deleted.len(),
        human_bytes(report.freed_bytes),
        report.freed_bytes,
        human_bytes(report.store_bytes_before),
        human_bytes(report.free_bytes_before),
        human_bytes(report.free_bytes_after)
    ));
    if report.swept_entries > 0 {
        lines.push(format!(
            "removed {} leftovers of interrupted fetches",
            report.swept_entries
        ));
    }
    if let Some(needed) = plan.bytes_needed {
        if report.freed_bytes < needed {
            lines.push(format!(
                "budget not met: {} more would have to go, but nothing else may",
                human_bytes(needed - report.freed_bytes)
            ));
        }
    }
    lines
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_manifest::StorePath;
    use nixlet_store::gc_plan::{GcPlan, Victim};
    use nixlet_store::tree_sweep::{SweptTree, TreeSweep};
    use nixlet_store::Skipped;

    #[test]
    fn the_report_names_each_path_and_the_total() {
        let path =
            StorePath::parse("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12").unwrap();
        let other = StorePath::parse("/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-busy-1").unwrap();
        let victim = Victim {
            path: path.clone(),
            nar_size: 2048,
            last_used: 1_000,
        };
        let report = GcReport {
            dry_run: false,
            plan: GcPlan {
                delete: vec![victim.clone()],
                bytes: 2048,
                bytes_needed: Some(4096),
                ..GcPlan::default()
            },
            deleted: vec![victim],
            skipped: vec![Skipped {
                path: other.clone(),
                reason: "another process holds its lock".into(),
            }],
            freed_bytes: 2048,
            store_bytes_before: 10 * 1024 * 1024,
            free_bytes_before: 1024,
            free_bytes_after: 3072,
            roots: 4,
            swept_entries: 2,
            trees: TreeSweep {
                removed: vec![SweptTree {
                    path: "/nix/var/nixlet/trees/abc".into(),
                    freed_bytes: 8192,
                }],
                kept: 3,
                leftovers: 1,
                freed_bytes: 12288,
            },
            batches: 1,
        };
        assert_eq!(
            report_lines(&report, 1_000 + 7_200),
            vec![
                format!("deleted {path} (2.0 KiB, last used 2h ago)"),
                format!("kept {other}: another process holds its lock"),
                "deleted store tree /nix/var/nixlet/trees/abc (no root points to its view; \
                 8.0 KiB)"
                    .to_string(),
                "store trees: 1 removed, 3 in use kept, 1 interrupted builds removed; freed \
                 12.0 KiB (trees share their files with the store)"
                    .to_string(),
                "kept 0 of nixlet's paths reachable from 4 roots, 0 used within the grace \
                 period, 0 referenced by paths that stay"
                    .to_string(),
                "freed 1 paths, 2.0 KiB (2048 bytes); store was 10.0 MiB, 1.0 KiB free before, \
                 3.0 KiB now"
                    .to_string(),
                "removed 2 leftovers of interrupted fetches".to_string(),
                "budget not met: 2.0 KiB more would have to go, but nothing else may".to_string(),
            ]
        );
        assert_eq!(age(59), "59s ago");
        assert_eq!(age(-3), "0s ago");
        assert_eq!(age(86_400 * 3), "3d ago");
    }
}
