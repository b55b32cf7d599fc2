//! The headline table at the top of BENCHMARKS.md: each of issue 6's targets next to what was
//! measured, so a reader sees at once where nixlet meets them and where it does not.

use std::fmt::Write as _;

use crate::report::{number, Results};
use crate::results::Figure;

/// A target: the scenario, which of its figures (names starting with `prefix`), the target as
/// text, and whether a median meets it (`None`: no target, shown for context).
struct Target {
    scenario: &'static str,
    prefix: &'static str,
    goal: &'static str,
    met: Option<fn(f64) -> bool>,
}

const TARGETS: &[Target] = &[
    Target {
        scenario: "cold-fetch",
        prefix: "nix-store -r / nixlet",
        goal: "≥ 4×",
        met: Some(|m| m >= 4.0),
    },
    Target {
        scenario: "cold-start",
        prefix: "runc + pull / nixlet + fetch",
        goal: "(none; > 1× means nixlet is faster)",
        met: None,
    },
    Target {
        scenario: "warm-start",
        prefix: "nixlet / runc, to first line",
        goal: "≤ 1.10×",
        met: Some(|m| m <= 1.10),
    },
    Target {
        scenario: "mount-scaling",
        prefix: "nixlet: start time per mounted path",
        goal: "≤ 20 µs/path",
        met: Some(|m| m <= 20.0),
    },
    Target {
        scenario: "memory",
        prefix: "nixlet / runc handler, shims per pod",
        goal: "(none; nixlet adds a process per pod)",
        met: None,
    },
    Target {
        scenario: "many-pods",
        prefix: "most downloads of one NAR",
        goal: "each NAR once (= 1)",
        met: Some(|m| m <= 1.0),
    },
    Target {
        scenario: "disk",
        prefix: "containerd / nixlet, disk",
        goal: "> 1× (less disk than images)",
        met: Some(|m| m > 1.0),
    },
];

pub fn markdown(results: &Results) -> String {
    let mut out = String::from(
        "## Summary\n\n| scenario | figure | median (min – max) | target | met? |\n| --- | --- | ---: | --- | --- |\n",
    );
    for target in TARGETS {
        let Some(report) = results.scenarios.get(target.scenario) else {
            continue;
        };
        let figures: Vec<&Figure> = report
            .figures
            .iter()
            .chain(&report.ratios)
            .filter(|f| f.name.starts_with(target.prefix))
            .collect();
        for figure in figures {
            let Some(s) = figure.summary else { continue };
            let met = match target.met {
                Some(check) if check(s.median) => "yes",
                Some(_) => "**no**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} ({} – {}) {} | {} | {met} |",
                target.scenario,
                figure.name,
                number(s.median),
                number(s.min),
                number(s.max),
                figure.unit,
                target.goal
            );
        }
    }
    out.push('\n');
    out
}
