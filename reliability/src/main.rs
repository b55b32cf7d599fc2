//! `nixlet-reliability`: see lib.rs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs nixlet through faults, churn and garbage collection against a real containerd, and
/// writes RELIABILITY.json and RELIABILITY.md.
#[derive(Parser)]
#[command(name = "nixlet-reliability", after_help = scenarios_help())]
struct Cli {
    /// What to run: `all`, or scenario names.
    #[arg(required = true, value_name = "SCENARIO")]
    targets: Vec<String>,
    /// A few iterations of each scenario (what CI runs): a check that nothing regressed, not
    /// the figures RELIABILITY.md is for.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario variant (each scenario has its own default).
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Where RELIABILITY.json and RELIABILITY.md go (default: the workspace root; quick runs go
    /// below the target directory so they never replace the full run's figures).
    #[arg(long = "out", value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

fn scenarios_help() -> String {
    format!(
        "Scenarios: {}",
        nixlet_reliability::scenario_names().join(", ")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome =
        nixlet_reliability::Options::from_targets(&cli.targets, cli.quick, cli.runs, cli.out_dir)
            .and_then(|options| nixlet_reliability::run(&options));
    match outcome {
        Ok(results) if results.clean() => ExitCode::SUCCESS,
        Ok(results) => {
            eprintln!(
                "nixlet-reliability: not clean: {}",
                results.problems().join("; ")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nixlet-reliability: {e:#}");
            ExitCode::FAILURE
        }
    }
}
