//! `nixlet`: the operator's view of what the shim does on this node.

mod create_events;
mod doctor;
mod env_command;
mod environment_sync;
mod event_rate_limit;
mod fetch_progress_bar;
mod gc_command;
mod metrics_server;
mod node_command;
mod node_label;
#[cfg(test)]
mod node_label_http_test;
mod node_metrics;
mod node_run;
mod sbom_command;
mod stale_roots;
mod telemetry_ingest;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nixlet",
    version,
    about = "Run Kubernetes pods from Nix store paths"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect environments as the shim would see them on this node.
    #[command(subcommand)]
    Env(env_command::EnvCommand),
    /// Install nixlet on a node, or remove it.
    #[command(subcommand)]
    Node(node_command::NodeCommand),
    /// Delete store paths nixlet installed that no GC root reaches, oldest use first.
    Gc(gc_command::GcCommand),
    /// Check that this node can run nixlet pods; print each finding with a fix.
    Doctor(doctor::DoctorArgs),
}

fn main() {
    if let Err(error) = run() {
        // One readable line with the whole cause chain, each cause once (many errors embed
        // their source's text); no backtrace even with RUST_BACKTRACE.
        eprintln!("nixlet: {}", cause_line(&error));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text is already there.
fn cause_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NIXLET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Env(command) => command.run(),
        Command::Node(command) => command.run(),
        Command::Gc(command) => command.run(),
        Command::Doctor(args) => doctor::run(args),
    }
}

#[cfg(test)]
mod cause_line_tests {
    use super::*;

    /// An error that says its source's text and also returns it as its source.
    #[derive(Debug)]
    struct Embedding(std::io::Error);

    impl std::fmt::Display for Embedding {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "outer: {}", self.0)
        }
    }

    impl std::error::Error for Embedding {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::other("no such file");
        let error = anyhow::Error::new(Embedding(io)).context("resolve acme/web");
        assert_eq!(cause_line(&error), "resolve acme/web: outer: no such file");
    }
}
