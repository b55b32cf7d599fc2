//! The results of a run: a table on stdout, a JSON file (every figure and ratio with median,
//! min, max and raw samples), and BENCHMARKS.md rendered from that JSON. A run of some
//! scenarios replaces only their entries, so scenarios can be re-measured one at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::results::{Figure, ScenarioReport};
use crate::scenarios::{Scenario, MISSING};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    /// How the nixlet shim was built for the pod scenarios.
    pub shim: String,
    pub scenarios: BTreeMap<String, ScenarioReport>,
}

impl Results {
    /// The results in `json` if it exists and parses, with `machine` (and `shim`, when this
    /// run builds one) updated, else new ones.
    pub fn load_or_new(json: &Path, machine: Machine, shim: Option<String>) -> Self {
        let previous = fs::read_to_string(json)
            .ok()
            .and_then(|t| serde_json::from_str::<Results>(&t).ok());
        let (scenarios, previous_shim) =
            previous.map(|p| (p.scenarios, p.shim)).unwrap_or_default();
        Self {
            machine,
            shim: shim.unwrap_or(previous_shim),
            scenarios,
        }
    }

    pub fn write(&self, json: &Path, markdown: &Path) -> Result<()> {
        fs::write(json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        fs::write(markdown, self.markdown())
            .with_context(|| format!("writing {}", markdown.display()))?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# nixlet benchmarks\n\n\
             Produced by `cargo run --release -p nixlet-bench -- all` (as root, on a host prepared by \
             `scripts/install-deps.sh`); every number below comes from that command on the machine \
             described here, with nixlet and what it is compared with measured side by side in one \
             run. Raw samples are in `BENCHMARKS.json`. Each figure is the median of the measured \
             runs (after warm-up runs that are not counted), with min and max; each ratio is \
             computed per run from runs made back to back, then summarized the same way.\n\n\
             ## Machine\n\n\
             | | |\n| --- | --- |\n\
             | CPU | {} |\n| cores | {} |\n| memory | {:.1} GiB |\n| kernel | {} |\n| OS | {} |\n\
             | containerd | {} |\n| runc | {} |\n| Nix | {} |\n| /nix/store filesystem | {} |\n\
             | nixlet shim | {} |\n",
            m.cpu,
            m.cores,
            m.memory_gib,
            m.kernel,
            m.os,
            m.containerd,
            m.runc,
            m.nix,
            m.store_filesystem,
            self.shim
        );
        out.push_str(&crate::summary::markdown(self));
        for scenario in Scenario::ALL {
            if let Some(report) = self.scenarios.get(scenario.name()) {
                scenario_markdown(&mut out, report);
            }
        }
        let not_run: Vec<&str> = Scenario::ALL
            .iter()
            .map(|s| s.name())
            .filter(|name| !self.scenarios.contains_key(*name))
            .collect();
        if !MISSING.is_empty() || !not_run.is_empty() {
            let _ = writeln!(out, "## Not measured\n");
            for name in not_run {
                let _ = writeln!(
                    out,
                    "- `{name}`: implemented but not in this file yet (run `cargo run --release -p nixlet-bench -- {name}`)."
                );
            }
            for (what, why) in MISSING {
                let _ = writeln!(out, "- {what}: {why}");
            }
            out.push('\n');
        }
        out
    }
}

fn scenario_markdown(out: &mut String, report: &ScenarioReport) {
    let _ = writeln!(out, "## {} (`{}`)\n", report.title, report.name);
    let _ = writeln!(
        out,
        "{} measured run(s) after {} warm-up run(s){}, finished {}.\n",
        report.iterations,
        report.warmup,
        if report.quick {
            ", QUICK MODE (tiny sizes: not representative)"
        } else {
            ""
        },
        report.finished
    );
    for line in &report.method {
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
    if !report.findings.is_empty() {
        let _ = writeln!(out, "**Findings**\n");
        for line in &report.findings {
            let _ = writeln!(out, "- {line}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "| figure | median | min | max | unit |\n| --- | ---: | ---: | ---: | --- |"
    );
    for figure in report.figures.iter().chain(&report.ratios) {
        let _ = writeln!(out, "{}", row(figure, "|"));
    }
    out.push('\n');
}

/// One figure as a table row: `name | median | min | max | unit`.
fn row(figure: &Figure, sep: &str) -> String {
    let (median, min, max) = figure.summary.map_or_else(
        || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        |s| (number(s.median), number(s.min), number(s.max)),
    );
    format!(
        "{sep} {} {sep} {median} {sep} {min} {sep} {max} {sep} {} {sep}",
        figure.name, figure.unit
    )
}

/// Three significant digits or so, never scientific notation.
pub(crate) fn number(value: f64) -> String {
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

/// The scenario as a plain-text table for the terminal.
pub fn print_table(report: &ScenarioReport) {
    let rows: Vec<&Figure> = report.figures.iter().chain(&report.ratios).collect();
    let width = rows
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(10);
    println!("\n== {} ({}) ==", report.title, report.name);
    println!(
        "{:width$}  {:>10} {:>10} {:>10}  unit",
        "figure", "median", "min", "max"
    );
    for figure in rows {
        let (median, min, max) = figure.summary.map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |s| (number(s.median), number(s.min), number(s.max)),
        );
        println!(
            "{:width$}  {median:>10} {min:>10} {max:>10}  {}",
            figure.name, figure.unit
        );
    }
    for line in &report.findings {
        println!("  * {line}");
    }
}
