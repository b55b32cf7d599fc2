//! One invocation: pick the scenarios, prepare, run each, record the results.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::machine::Machine;
use crate::report::{print_table, Results};
use crate::scenarios::{Context, Scenario};
use crate::shim_binary;
use crate::workdir::Workdir;

#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// Tiny sizes and one run each: a smoke test of the harness, not a measurement.
    pub quick: bool,
    pub iterations: Option<usize>,
    /// Where BENCHMARKS.json and BENCHMARKS.md go: the workspace root for real runs; quick
    /// runs default to `<target>/nixlet-bench/quick` so they never replace real numbers.
    pub out_dir: Option<PathBuf>,
    /// `report`: measure nothing, re-derive the findings in BENCHMARKS.json and rewrite
    /// BENCHMARKS.md from it.
    pub rerender: bool,
}

impl Options {
    /// `targets` as the command line names them: `all`, `report`, or scenario names.
    pub fn from_targets(
        targets: &[String],
        quick: bool,
        iterations: Option<usize>,
        out_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let mut options = Options {
            scenarios: Vec::new(),
            quick,
            iterations,
            out_dir,
            rerender: false,
        };
        for target in targets {
            match target.as_str() {
                "all" => options.scenarios.extend(Scenario::ALL),
                "report" => options.rerender = true,
                name => match Scenario::by_name(name) {
                    Some(scenario) => options.scenarios.push(scenario),
                    None => bail!(
                        "unknown scenario {name:?} (all, report, {})",
                        scenario_names().join(", ")
                    ),
                },
            }
        }
        if options.scenarios.is_empty() && !options.rerender {
            bail!(
                "no scenario named (all, report, {})",
                scenario_names().join(", ")
            );
        }
        options.scenarios.dedup();
        Ok(options)
    }
}

pub fn scenario_names() -> Vec<&'static str> {
    Scenario::ALL.iter().map(|s| s.name()).collect()
}

/// Runs the chosen scenarios; returns the results written (all scenarios in the JSON file,
/// including those kept from earlier runs). Stops at the first failing scenario, after
/// writing what was measured before it.
pub fn run(options: &Options) -> Result<Results> {
    if options.rerender {
        return rerender(options);
    }
    let missing = nixlet_e2e::prereq::missing();
    if !missing.is_empty() {
        bail!(
            "this host cannot run the benchmarks: {}",
            missing.join("; ")
        );
    }
    let work = Workdir::prepare()?;
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None if options.quick => work.subdir("quick")?,
        None => nixlet_e2e::shim_build::workspace_root(),
    };
    std::fs::create_dir_all(&out_dir)?;
    let (json, markdown) = (
        out_dir.join("BENCHMARKS.json"),
        out_dir.join("BENCHMARKS.md"),
    );
    let shim = if options.scenarios.iter().any(|s| s.needs_node()) {
        Some(shim_binary::select()?)
    } else {
        None
    };
    let mut results = Results::load_or_new(&json, Machine::describe(), shim);
    let ctx = Context {
        quick: options.quick,
        work,
        iterations: options.iterations,
    };
    for scenario in &options.scenarios {
        eprintln!("nixlet-bench: running {}", scenario.name());
        let mut report = scenario
            .run(&ctx)
            .with_context(|| format!("scenario {}", scenario.name()))?;
        report.finished = utc_now();
        print_table(&report);
        results.scenarios.insert(report.name.clone(), report);
        results.write(&json, &markdown)?;
    }
    println!("\nwrote {} and {}", json.display(), markdown.display());
    Ok(results)
}

fn rerender(options: &Options) -> Result<Results> {
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(nixlet_e2e::shim_build::workspace_root);
    let (json, markdown) = (
        out_dir.join("BENCHMARKS.json"),
        out_dir.join("BENCHMARKS.md"),
    );
    let text =
        std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
    let mut results: Results = serde_json::from_str(&text)?;
    for scenario in Scenario::ALL {
        if let Some(report) = results.scenarios.get_mut(scenario.name()) {
            report.findings = scenario.findings(report);
        }
    }
    results.write(&json, &markdown)?;
    println!("rewrote {} and {}", json.display(), markdown.display());
    Ok(results)
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
