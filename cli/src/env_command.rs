//! `nixlet env …`: resolve an environment reference and list its closure, with the node config
//! the shim uses, so an operator sees exactly what a pod would get.

use anyhow::{Context, Result};
use clap::Subcommand;
use nixlet_manifest::{EnvRef, ResolvedEnv};
use nixlet_shim::config::NodeConfig;
use nixlet_store::LocalStore;

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Print the generation, packages and variables a reference resolves to.
    Resolve {
        /// `owner/name`, `owner/name:N` or `owner/name@sha256:HEX`
        reference: String,
    },
    /// List the closure of an environment's store paths on this node.
    Closure { reference: String },
}

impl EnvCommand {
    pub fn run(self) -> Result<()> {
        let config = NodeConfig::load()?;
        match self {
            EnvCommand::Resolve { reference } => {
                let env = resolve(&config, &reference)?;
                println!("environment {}", env.display_name());
                for package in &env.packages {
                    for output in &package.outputs {
                        println!(
                            "package {} priority {} output {}{} {}",
                            package.install_id,
                            package.priority,
                            output.name,
                            if output.to_install {
                                ""
                            } else {
                                " (not installed)"
                            },
                            output.store_path
                        );
                    }
                }
                for (name, value) in &env.vars {
                    println!("var {name}={value}");
                }
            }
            EnvCommand::Closure { reference } => {
                let env = resolve(&config, &reference)?;
                let closure = LocalStore::new(&config.nix_db)
                    .closure(&env.store_paths())
                    .with_context(|| format!("closure of {}", env.display_name()))?;
                for path in closure {
                    println!("{path}");
                }
            }
        }
        Ok(())
    }
}

fn resolve(config: &NodeConfig, reference: &str) -> Result<ResolvedEnv> {
    let reference = EnvRef::parse(reference)?;
    Ok(nixlet_manifest::resolve(
        &config.environment_sources(),
        &reference,
        &config.system,
    )?)
}
