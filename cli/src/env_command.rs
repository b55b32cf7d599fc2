//! `nixlet env …`: resolve an environment reference, fetch its closure and list it, with the
//! node config the shim uses, so an operator sees exactly what a pod would get.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use nixlet_config::NodeConfig;
use nixlet_manifest::{EnvRef, ResolvedEnv};
use nixlet_store::{FetchProgress, Fetcher, FlakeRecipe, LocalStore};

use crate::fetch_progress_bar::{human_bytes, Reporter};

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Print the generation, packages and variables a reference resolves to.
    Resolve {
        /// `owner/name`, `owner/name:N` or `owner/name@sha256:HEX`
        reference: String,
    },
    /// List the closure of an environment's store paths on this node, with sizes.
    Closure { reference: String },
    /// Fetch the closure of an environment from the node's substituters, as Create would.
    Fetch {
        /// `owner/name`, `owner/name:N` or `owner/name@sha256:HEX`
        reference: String,
    },
    /// Print the environment's CycloneDX bill of materials, computed from this node's store.
    Sbom(crate::sbom_command::SbomArgs),
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
                                // Installed, but loses file collisions (`version = 1`).
                                " (loses collisions)"
                            },
                            output.store_path
                        );
                    }
                }
                for (name, value) in &env.vars {
                    println!("var {name}={value}");
                }
                for name in &env.included {
                    println!("included {name}");
                }
                if let Some(mode) = env.activate_mode {
                    println!("activate-mode {mode}");
                }
                for warning in &env.warnings {
                    eprintln!("warning: {warning}");
                }
            }
            EnvCommand::Closure { reference } => {
                let env = resolve(&config, &reference)?;
                let closure = LocalStore::new(&config.nix_db)
                    .closure(&env.store_paths())
                    .with_context(|| format!("closure of {}", env.display_name()))?;
                let sizes = nixlet_store::store_graph::path_infos(&config.nix_db, &closure)
                    .with_context(|| format!("sizes of the closure of {}", env.display_name()))?;
                let mut total = 0;
                for (path, info) in &sizes {
                    let size = info.as_ref().and_then(|i| i.nar_size).unwrap_or(0);
                    total += size;
                    println!("{:>10}  {path}", human_bytes(size));
                }
                println!(
                    "{:>10}  total: {} paths, {total} bytes",
                    human_bytes(total),
                    sizes.len()
                );
            }
            EnvCommand::Fetch { reference } => fetch(&config, &reference)?,
            EnvCommand::Sbom(args) => crate::sbom_command::run(args, &config)?,
        }
        Ok(())
    }
}

fn fetch(config: &NodeConfig, reference: &str) -> Result<()> {
    let env = resolve(config, reference)?;
    let roots = env.store_paths();
    // As Create: a node that builds flakes builds those no cache has.
    let recipes = FlakeRecipe::of_environment(&env);
    let fetcher = Fetcher::new(config.substituters.clone(), config.fetch_options())
        .context("node config substituters")?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let progress = Arc::new(FetchProgress::default());
    let mut reporter = Reporter::for_this_terminal(Arc::clone(&progress));
    let result = runtime.block_on(async {
        let fetch = fetcher.fetch_closure_with_progress(&roots, &recipes, progress);
        tokio::pin!(fetch);
        let mut ticker = tokio::time::interval(reporter.interval());
        loop {
            tokio::select! {
                result = &mut fetch => break result,
                _ = ticker.tick() => reporter.tick(),
            }
        }
    });
    match result {
        Ok(summary) => {
            reporter.finish(Some(&summary));
            Ok(())
        }
        Err(error) => {
            reporter.finish(None);
            Err(error).with_context(|| format!("fetch the closure of {}", env.display_name()))
        }
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
