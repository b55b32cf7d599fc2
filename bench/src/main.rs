//! `nixlet-bench (all | SCENARIO...) [--quick] [--iterations N] [--out DIR]`: see lib.rs.

use std::process::ExitCode;

fn main() -> ExitCode {
    let outcome =
        nixlet_bench::Options::parse(std::env::args().skip(1)).and_then(|o| nixlet_bench::run(&o));
    match outcome {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nixlet-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
