//! RELIABILITY.md, rendered from the results: the machine, a summary table (per scenario: runs,
//! failures, leaks, invalid store paths, longest recovery), then each scenario's method,
//! findings, figures and runs grouped by variant. The hand-written `## Hostile input` section
//! of the existing file is carried over verbatim.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::hostile_input;
use crate::results::{Results, RunRecord, ScenarioReport};
use crate::scenarios::Scenario;

/// Writes `markdown`, keeping the `## Hostile input` section of the file already there (or, for
/// an output elsewhere, of the workspace's RELIABILITY.md).
pub fn write_markdown(results: &Results, markdown: &Path) -> Result<()> {
    let existing = fs::read_to_string(markdown).ok().or_else(|| {
        fs::read_to_string(nixlet_e2e::shim_build::workspace_root().join("RELIABILITY.md")).ok()
    });
    let kept = existing.as_deref().and_then(hostile_input::extract);
    let text = hostile_input::append(render(results), kept);
    fs::write(markdown, text).with_context(|| format!("writing {}", markdown.display()))
}

/// Everything but the kept section.
pub fn render(results: &Results) -> String {
    let m = &results.machine;
    let mut out = String::new();
    let quick = results.scenarios.values().any(|s| s.quick);
    let _ = writeln!(
        out,
        "# nixlet reliability\n\n\
         Produced by `cargo run -p nixlet-reliability -- all` (as root, on a host prepared by \
         `scripts/install-deps.sh`){}. Each scenario runs against a private containerd with the \
         nixlet shim and real runc, with binary caches made by Nix and served on loopback; every \
         run's record is in `RELIABILITY.json`.\n\n\
         Counted per run: **failures** (the run did not behave as the scenario's method says \
         nixlet must), **leaks** (what pods left on the node once they were removed, compared \
         with before: shim processes of that containerd, mounts, shim sockets, GC roots, store \
         trees, store temporaries and lock files, telemetry files of exited shims, and growth of \
         the open descriptors and memory of `nixlet node run`), **invalid store paths** (of the \
         paths nixlet may have installed, one on disk but not registered, registered but not on \
         disk, or not matching its hash under `nix-store --verify-path`), and **recovery** (from \
         the end of the fault until the pod ran).\n",
        if quick {
            "; QUICK MODE: a few iterations of each scenario, a regression check rather than the \
             figures of a full run"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "## Machine\n\n\
         | | |\n| --- | --- |\n\
         | CPU | {} |\n| cores | {} |\n| memory | {:.1} GiB |\n| kernel | {} |\n| OS | {} |\n\
         | containerd | {} |\n| runc | {} |\n| Nix | {} |\n| /nix/store filesystem | {} |\n",
        m.cpu,
        m.cores,
        m.memory_gib,
        m.kernel,
        m.os,
        m.containerd,
        m.runc,
        m.nix,
        m.store_filesystem
    );
    let _ = writeln!(
        out,
        "## Summary\n\n\
         | scenario | runs | failures | leaks | invalid store paths | longest recovery | took |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for report in ordered(results) {
        let _ = writeln!(
            out,
            "| [{}](#{}) | {} | {} | {} | {} | {} | {:.0} s |",
            report.name,
            anchor(report),
            report.runs.len(),
            report.failures(),
            report.leaks(),
            report.invalid_paths(),
            report.longest_recovery_ms().map_or("-".to_owned(), seconds),
            report.seconds
        );
    }
    out.push('\n');
    let not_run: Vec<&str> = Scenario::ALL
        .iter()
        .map(|s| s.name())
        .filter(|name| !results.scenarios.contains_key(*name))
        .collect();
    if !not_run.is_empty() {
        let _ = writeln!(
            out,
            "Not in this file yet: {} (run `cargo run -p nixlet-reliability -- NAME`).\n",
            not_run.join(", ")
        );
    }
    for report in ordered(results) {
        scenario(&mut out, report);
    }
    out
}

fn ordered(results: &Results) -> impl Iterator<Item = &ScenarioReport> {
    Scenario::ALL
        .iter()
        .filter_map(|s| results.scenarios.get(s.name()))
}

/// GitHub's anchor for the scenario's heading.
fn anchor(report: &ScenarioReport) -> String {
    format!("{} ({})", report.title, report.name)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn scenario(out: &mut String, report: &ScenarioReport) {
    let _ = writeln!(out, "## {} ({})\n", report.title, report.name);
    let _ = writeln!(
        out,
        "{} run(s), {} failure(s), {} leak(s), {} invalid store path(s); took {:.0} s, finished {}{}.\n",
        report.runs.len(),
        report.failures(),
        report.leaks(),
        report.invalid_paths(),
        report.seconds,
        report.finished,
        if report.quick { ", QUICK MODE" } else { "" }
    );
    for line in &report.method {
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
    if let Some(error) = &report.error {
        let _ = writeln!(out, "**The scenario did not run to its end**: {error}\n");
    }
    if !report.findings.is_empty() {
        let _ = writeln!(out, "**Findings**\n");
        for line in &report.findings {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    if !report.figures.is_empty() {
        let _ = writeln!(out, "| figure | value | unit |\n| --- | ---: | --- |");
        for figure in &report.figures {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                figure.name,
                number(figure.value),
                figure.unit
            );
        }
        out.push('\n');
    }
    if !report.runs.is_empty() {
        let _ = writeln!(
            out,
            "| variant | runs | failures | leaks | invalid | longest recovery | longest wait (limit) | what happened |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for (variant, runs) in by_variant(&report.runs) {
            variant_row(out, &variant, &runs);
        }
        out.push('\n');
    }
    let problems: Vec<String> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.leaks
                .iter()
                .map(move |l| format!("{}: leak: {l}", r.variant))
                .chain(
                    r.invalid_paths
                        .iter()
                        .map(move |p| format!("{}: invalid: {p}", r.variant)),
                )
        })
        .chain(
            report
                .teardown_leaks
                .iter()
                .map(|l| format!("teardown: {l}")),
        )
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(out, "Leaks and invalid paths found:\n");
        for problem in problems.iter().take(50) {
            let _ = writeln!(out, "- {}", escape(problem));
        }
        out.push('\n');
    }
}

/// Runs grouped by variant, in the order variants first appear.
fn by_variant(runs: &[RunRecord]) -> Vec<(String, Vec<&RunRecord>)> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for run in runs {
        if !groups.contains_key(&run.variant) {
            order.push(run.variant.clone());
        }
        groups.entry(run.variant.clone()).or_default().push(run);
    }
    order
        .into_iter()
        .map(|v| {
            let runs = groups.remove(&v).unwrap_or_default();
            (v, runs)
        })
        .collect()
}

fn variant_row(out: &mut String, variant: &str, runs: &[&RunRecord]) {
    let failures = runs.iter().filter(|r| !r.ok).count();
    let leaks: usize = runs.iter().map(|r| r.leaks.len()).sum();
    let invalid: usize = runs.iter().map(|r| r.invalid_paths.len()).sum();
    let recovery = runs
        .iter()
        .filter_map(|r| r.recovery_ms)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let wait = runs
        .iter()
        .filter_map(|r| Some((r.wait_ms?, r.wait_limit_ms)))
        .fold(None, |m: Option<(f64, Option<f64>)>, w| match m {
            Some(m) if m.0 >= w.0 => Some(m),
            _ => Some(w),
        });
    // The first failing run says most; else the last run's account.
    let detail = runs
        .iter()
        .find(|r| !r.ok)
        .or(runs.last())
        .map(|r| r.detail.as_str())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| {} | {} | {failures} | {leaks} | {invalid} | {} | {} | {} |",
        escape(variant),
        runs.len(),
        recovery.map_or("-".to_owned(), seconds),
        wait.map_or("-".to_owned(), |(w, limit)| match limit {
            Some(limit) => format!("{} ({})", seconds(w), seconds(limit)),
            None => seconds(w),
        }),
        escape(&shorten(detail, 400))
    );
}

fn seconds(ms: f64) -> String {
    format!("{} s", number(ms / 1000.0))
}

/// Three significant digits or so, never scientific notation.
pub fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Safe inside a table cell: no pipe, no newline.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

/// The scenario's outcome on the terminal.
pub fn print_summary(report: &ScenarioReport) {
    println!(
        "\n== {} ({}) ==\nruns {}, failures {}, leaks {}, invalid store paths {}, longest recovery {}, {:.0} s",
        report.title,
        report.name,
        report.runs.len(),
        report.failures(),
        report.leaks(),
        report.invalid_paths(),
        report
            .longest_recovery_ms()
            .map_or("-".to_owned(), seconds),
        report.seconds
    );
    for figure in &report.figures {
        println!(
            "  {}: {} {}",
            figure.name,
            number(figure.value),
            figure.unit
        );
    }
    for line in &report.findings {
        println!("  * {line}");
    }
    for problem in report.problems().iter().take(20) {
        println!("  ! {problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_e2e::machine::Machine;

    fn machine() -> Machine {
        serde_json::from_value(serde_json::json!({
            "cpu": "c", "cores": 2, "memory_gib": 1.0, "kernel": "k", "os": "o",
            "containerd": "1.6", "runc": "r", "nix": "n", "store_filesystem": "ext2/ext3"
        }))
        .unwrap()
    }

    #[test]
    fn renders_a_summary_row_and_groups_runs_by_variant() {
        let mut report = ScenarioReport::new("shim-kill", "The shim killed", false);
        for (variant, ok) in [("resolve", true), ("resolve", false), ("fetch", true)] {
            let mut run = RunRecord::new(variant);
            run.recovery_ms = Some(1500.0);
            if !ok {
                run.fail("retry | failed");
            }
            report.runs.push(run);
        }
        let results = Results {
            machine: machine(),
            scenarios: [(report.name.clone(), report)].into_iter().collect(),
        };
        let text = render(&results);
        assert!(
            text.contains("| [shim-kill](#the-shim-killed-shim-kill) | 3 | 1 | 0 | 0 | 1.50 s |"),
            "{text}"
        );
        assert!(text.contains("| resolve | 2 | 1 | 0 | 0 | 1.50 s | - | retry \\| failed |"));
        assert!(text.contains("| fetch | 1 | 0 |"));
        assert!(text.contains("Not in this file yet: containerd-kill"));
    }

    #[test]
    fn the_hand_written_section_survives_a_rewrite() {
        let dir = std::env::temp_dir().join(format!("nixlet-rel-md-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("RELIABILITY.md");
        let hand = "## Hostile input\n\n| input | rejected |\n| --- | --- |\n| `../x` | yes |\n";
        fs::write(
            &file,
            format!("# old\n\n## Summary\nold\n\n{hand}## Old tail\n"),
        )
        .unwrap();
        let results = Results {
            machine: machine(),
            scenarios: BTreeMap::new(),
        };
        write_markdown(&results, &file).unwrap();
        let written = fs::read_to_string(&file).unwrap();
        assert_eq!(hostile_input::extract(&written), Some(hand));
        assert!(!written.contains("# old"));
        write_markdown(&results, &file).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), written);
        fs::remove_dir_all(dir).unwrap();
    }
}
