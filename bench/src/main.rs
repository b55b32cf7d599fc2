//! `nixlet-bench`: see lib.rs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Benchmarks nixlet against what users would use instead, side by side on this machine, and
/// writes BENCHMARKS.json and BENCHMARKS.md.
#[derive(Parser)]
#[command(name = "nixlet-bench", after_help = scenarios_help())]
struct Cli {
    /// What to run: `all`, scenario names, or `report` (measure nothing; rewrite BENCHMARKS.md
    /// from BENCHMARKS.json).
    #[arg(required = true, value_name = "SCENARIO")]
    targets: Vec<String>,
    /// Tiny sizes and one run each: a smoke test of the harness, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Runs per measurement (each scenario has its own default).
    #[arg(long, value_name = "N")]
    iterations: Option<usize>,
    /// Where BENCHMARKS.json and BENCHMARKS.md go (default: the workspace root; quick runs go
    /// below the target directory so they never replace real numbers).
    #[arg(long = "out", value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

fn scenarios_help() -> String {
    format!("Scenarios: {}", nixlet_bench::scenario_names().join(", "))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome =
        nixlet_bench::Options::from_targets(&cli.targets, cli.quick, cli.iterations, cli.out_dir)
            .and_then(|options| nixlet_bench::run(&options));
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nixlet-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
