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
        // One readable line with the whole cause chain; no backtrace even with RUST_BACKTRACE.
        eprintln!("nixlet: {error:#}");
        std::process::exit(1);
    }
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
