//! `nixlet env sbom REF`: the environment's CycloneDX bill of materials, computed from this
//! node's store exactly as the shim writes it into the view (`share/nixlet/sbom.cdx.json`).
//! Nothing is fetched: every path of the closure must already be on the node.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use nixlet_config::NodeConfig;
use nixlet_manifest::EnvRef;
use nixlet_store::environment_sbom::{environment_sbom, EnvironmentSbomError};

#[derive(Args)]
pub struct SbomArgs {
    /// `owner/name`, `owner/name:N` or `owner/name@sha256:HEX`
    reference: String,
    /// Write the document to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(args: SbomArgs, config: &NodeConfig) -> Result<()> {
    let reference = EnvRef::parse(&args.reference)?;
    let env = nixlet_manifest::resolve(&config.environment_sources(), &reference, &config.system)?;
    let sbom = environment_sbom(&env, &config.nix_db).map_err(|error| match error {
        // The closure is read from this node only; say how to get it here.
        EnvironmentSbomError::Store { .. } => anyhow::anyhow!(
            "{error}; `nixlet env fetch {}` fetches the closure onto this node",
            args.reference
        ),
        other => other.into(),
    })?;
    match &args.output {
        Some(path) => std::fs::write(path, &sbom)
            .with_context(|| format!("write sbom to {}", path.display()))?,
        None => std::io::stdout()
            .lock()
            .write_all(&sbom)
            .context("write sbom to standard output")?,
    }
    Ok(())
}
