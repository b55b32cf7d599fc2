//! What Create does to a bundle before the runc shim sees it.
//!
//! Everything that can fail (annotation, environment, closure) is settled before `config.json`
//! is touched, so a refused container leaves its bundle exactly as containerd wrote it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use nixlet_manifest::{select, Selection};
use nixlet_store::LocalStore;
use serde_json::Value;

use crate::bundle;
use crate::config::NodeConfig;
use crate::create_error::{CreateError, Phase};
use crate::env_overlay::EnvOverlay;
use crate::spec_rewrite::rewrite_spec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Handed on unchanged: a sandbox, a container without an environment, or a skipped one.
    Unchanged,
    /// `config.json` was rewritten for this environment.
    Rewritten {
        /// `owner/name:N`: the generation actually used.
        environment: String,
        overlay: EnvOverlay,
    },
}

pub fn prepare_bundle(bundle: &Path, config: &NodeConfig) -> Result<Prepared, CreateError> {
    let started = Instant::now();
    let mut spec = bundle::read_spec(bundle)
        .map_err(|error| CreateError::new(Phase::Rewrite, None, &error))?;
    let annotations = annotations_of(&spec);

    let reference = match select(&annotations)
        .map_err(|error| CreateError::new(Phase::Resolve, None, &error))?
    {
        Selection::Untouched => return Ok(Prepared::Unchanged),
        Selection::Skipped { container } => {
            tracing::info!(container = %container, "container skipped by annotation");
            return Ok(Prepared::Unchanged);
        }
        Selection::Environment { key, reference } => {
            tracing::debug!(annotation = %key, reference = %reference, "environment requested");
            reference
        }
    };
    let fail = |phase, error: &dyn std::error::Error| {
        CreateError::new(phase, Some(reference.to_string()), error)
    };

    let env = nixlet_manifest::resolve(&config.environment_sources(), &reference, &config.system)
        .map_err(|error| fail(Phase::Resolve, &error))?;

    let closure = LocalStore::new(&config.nix_db)
        .closure(&env.store_paths())
        .map_err(|error| fail(Phase::Fetch, &error))?;

    let overlay = EnvOverlay::for_environment(&env);
    let environment = env.display_name();
    rewrite_spec(&mut spec, &overlay, &closure, &environment)
        .map_err(|error| fail(Phase::Rewrite, &error))?;
    bundle::write_spec(bundle, &spec).map_err(|error| fail(Phase::Rewrite, &error))?;

    tracing::info!(
        environment = %environment,
        paths = closure.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rewrote container spec"
    );
    Ok(Prepared::Rewritten {
        environment,
        overlay,
    })
}

fn annotations_of(spec: &Value) -> HashMap<String, String> {
    spec.get("annotations")
        .and_then(Value::as_object)
        .map(|annotations| {
            annotations
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
