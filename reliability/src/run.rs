//! One invocation: pick the scenarios, run each, write the results after each.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};
use nixlet_e2e::machine::Machine;

use crate::report;
use crate::results::{Results, ScenarioReport};
use crate::scenarios::{Context, Scenario};

#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// A few iterations of each scenario.
    pub quick: bool,
    pub runs: Option<usize>,
    /// Where RELIABILITY.json and RELIABILITY.md go: the workspace root for full runs; quick
    /// runs default to `<target>/nixlet-reliability/quick`.
    pub out_dir: Option<PathBuf>,
}

impl Options {
    /// `targets` as the command line names them: `all` or scenario names.
    pub fn from_targets(
        targets: &[String],
        quick: bool,
        runs: Option<usize>,
        out_dir: Option<PathBuf>,
    ) -> Result<Self> {
        let mut scenarios = Vec::new();
        for target in targets {
            match target.as_str() {
                "all" => scenarios.extend(Scenario::ALL),
                name => match Scenario::by_name(name) {
                    Some(scenario) => scenarios.push(scenario),
                    None => bail!(
                        "unknown scenario {name:?} (all, {})",
                        scenario_names().join(", ")
                    ),
                },
            }
        }
        if scenarios.is_empty() {
            bail!("no scenario named (all, {})", scenario_names().join(", "));
        }
        if runs == Some(0) {
            bail!("--runs 0 would run nothing");
        }
        let mut seen = Vec::new();
        scenarios.retain(|s| {
            let new = !seen.contains(s);
            seen.push(*s);
            new
        });
        Ok(Options {
            scenarios,
            quick,
            runs,
            out_dir,
        })
    }
}

pub fn scenario_names() -> Vec<&'static str> {
    Scenario::ALL.iter().map(|s| s.name()).collect()
}

/// Runs the chosen scenarios; returns the results written. A scenario that fails to run is
/// recorded as such and the next one runs.
pub fn run(options: &Options) -> Result<Results> {
    let missing = nixlet_e2e::prereq::missing();
    if !missing.is_empty() {
        // As the e2e tests do: a developer machine skips, CI (`CI=true`) must not pass by
        // running nothing.
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("this host cannot run the suite: {}", missing.join("; "));
        }
        eprintln!("nixlet-reliability: skipping: {}", missing.join("; "));
        return Ok(Results {
            machine: Machine::describe(),
            scenarios: Default::default(),
        });
    }
    let work = nixlet_e2e::shim_build::target_dir()?.join("nixlet-reliability");
    std::fs::create_dir_all(&work)?;
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None if options.quick => work.join("quick"),
        None => nixlet_e2e::shim_build::workspace_root(),
    };
    std::fs::create_dir_all(&out_dir)?;
    let (json, markdown) = (
        out_dir.join("RELIABILITY.json"),
        out_dir.join("RELIABILITY.md"),
    );
    let mut results = Results::load_or_new(&json, Machine::describe());
    let ctx = Context {
        quick: options.quick,
        runs: options.runs,
        work,
    };
    for scenario in &options.scenarios {
        eprintln!("nixlet-reliability: running {}", scenario.name());
        let started = Instant::now();
        let mut report = ScenarioReport::new(scenario.name(), scenario.title(), options.quick);
        if let Err(e) = scenario.run(&ctx, &mut report) {
            eprintln!("nixlet-reliability: {}: {e:#}", scenario.name());
            report.error = Some(format!("{e:#}"));
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.finished = utc_now();
        report.summarize();
        report::print_summary(&report);
        results.scenarios.insert(report.name.clone(), report);
        results.write_json(&json)?;
        report::write_markdown(&results, &markdown)?;
    }
    println!("\nwrote {} and {}", json.display(), markdown.display());
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
