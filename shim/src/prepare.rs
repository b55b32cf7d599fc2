//! What Create does to a bundle before the runc shim sees it.
//!
//! Everything that can fail (annotation, environment, fetch, view) is settled before
//! `config.json` is touched, so a refused container leaves its bundle exactly as containerd wrote
//! it. The order: resolve the environment, fetch its closure, install the environment view, find
//! or build its store tree (`store_mounts.rs`), add the container's GC root, rewrite the spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nixlet_manifest::{
    activate_mode, select, skips_exec, ActivateMode, EnvRef, ResolvedEnv, Selection, StorePath,
};
use nixlet_store::environment_sbom::environment_sbom;
use nixlet_store::sbom::SBOM_VIEW_PATH;
use nixlet_store::view::install::install_view;
use nixlet_store::view::propagated::{with_propagated, Propagation};
use nixlet_store::view::tree::{ViewFile, ViewInput, ViewTree};
use nixlet_store::{already_complete, FetchError, Fetcher, FlakeRecipe, GcLock};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::activation::activation_files;
use crate::bundle;
use crate::create_error::{CreateError, Phase};
use crate::create_report::{CreateReport, PodIdentity};
use crate::env_overlay::{DevFacts, EnvOverlay, ViewFacts, CA_BUNDLE};
use crate::gc_root;
use crate::spec_rewrite::{rewrite_spec, CommandPlan};
use crate::store_mounts::{nix_state_dir, plan_store_mounts};
use crate::view_cache::{view_key, ViewCache};
use nixlet_config::NodeConfig;

/// Where the view keeps the lock file of the generation it was built from.
pub const VIEW_LOCK_FILE: &str = "manifest.lock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Handed on unchanged: a sandbox, a container without an environment, or a skipped one.
    Unchanged,
    /// `config.json` was rewritten for this environment.
    Rewritten {
        /// `owner/name:N`: the generation actually used.
        environment: String,
        /// What the container's exec processes get: the container's own overlay, or nothing
        /// for a container named in `skip-containers-exec`.
        overlay: EnvOverlay,
        /// The container's GC root, to remove at Delete.
        gc_root: PathBuf,
    },
}

/// The container Create is about, as containerd names it.
#[derive(Debug, Clone)]
pub struct ContainerRef {
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
}

/// `report` collects what the Create did, for its closing log line and the node agent's metrics.
pub async fn prepare_bundle(
    container: &ContainerRef,
    config: &NodeConfig,
    fetcher: &OnceCell<Fetcher>,
    report: &mut CreateReport,
) -> Result<Prepared, CreateError> {
    let started = Instant::now();
    let bundle_path = container.bundle.clone();
    let mut spec = blocking(Phase::Rewrite, None, move || {
        bundle::read_spec(&bundle_path)
    })
    .await?;
    let annotations = annotations_of(&spec);
    report.pod = PodIdentity::from_annotations(&annotations);

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
    let named = Some(reference.to_string());
    report.reference = named.clone();
    let fail = |phase, error: &dyn std::error::Error| CreateError::new(phase, named.clone(), error);
    // Checked before anything is fetched: a typo in an annotation should not cost a download.
    let mode_asked = activate_mode(&annotations).map_err(|error| fail(Phase::Resolve, &error))?;
    let skip_exec = skips_exec(&annotations).map_err(|error| fail(Phase::Resolve, &error))?;

    let env = {
        let (config, reference) = (config.clone(), reference.clone());
        blocking(Phase::Resolve, named.clone(), move || {
            nixlet_manifest::resolve(&config.environment_sources(), &reference, &config.system)
        })
        .await?
    };
    report.environment = Some(env.display_name());
    tracing::info!(
        container = %container.id,
        pod = %report.pod,
        reference = %reference,
        environment = %env.display_name(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "environment resolved"
    );
    for warning in &env.warnings {
        tracing::warn!(container = %container.id, pod = %report.pod, environment = %env.display_name(), %warning, "environment");
    }
    let roots = env.store_paths();

    // One shared hold on Nix's GC lock from before the fetch until the container's GC root
    // exists: neither `nixlet gc` nor the host's `nix-collect-garbage` (both take it exclusive)
    // can remove a path of the closure, the view or the store tree in between.
    let state_dir = nix_state_dir(&config.nix_db);
    let gc_guard = GcLock::shared(&state_dir).await.map_err(|error| {
        fail(
            Phase::Install,
            &GcGuardError {
                dir: state_dir,
                source: error,
            },
        )
    })?;

    if !config.substituters.is_empty() {
        // The Fetcher (HTTP client, TLS roots) is built at the first Create that has something
        // to fetch, not before: a warm pod on a node whose caches are all dead starts as fast
        // as on a node without substituters.
        let summary = match already_complete(&config.nix_db, &roots).await {
            Some(summary) => summary,
            None => {
                let fetcher = fetcher
                    .get_or_try_init(|| async {
                        Fetcher::new(config.substituters.clone(), config.fetch_options())
                    })
                    .await
                    .map_err(|error| fail(Phase::Fetch, &error))?;
                // The flake packages' recipes, for a node whose nix-cli substituter builds
                // flakes.
                let recipes = FlakeRecipe::of_environment(&env);
                fetcher
                    .fetch_closure_with_progress(&roots, &recipes, Default::default())
                    .await
                    .map_err(|error| fail(fetch_phase(&error), &error))?
            }
        };
        tracing::info!(
            container = %container.id,
            pod = %report.pod,
            environment = %env.display_name(),
            fetched = summary.paths_fetched,
            already_valid = summary.paths_already_valid,
            built = summary.paths_built,
            bytes = summary.bytes_downloaded,
            elapsed_ms = summary.elapsed.as_millis() as u64,
            "closure ready"
        );
        report.fetch = Some(summary);
    }
    // The pod's annotation over the manifest's option, and Flox's default, dev.
    let mode = mode_asked.or(env.activate_mode).unwrap_or_default();
    let view = build_view(&env, &reference, mode, config)
        .await
        .map_err(|error| fail(Phase::Install, &*error))?;
    let facts = {
        let view = view.clone();
        blocking(Phase::Install, named.clone(), move || {
            Ok::<_, std::io::Error>(view_facts(&view))
        })
        .await?
    };
    let command = command_plan(&env, &facts).map_err(|error| fail(Phase::Rewrite, &error))?;
    let overlay = EnvOverlay::for_view(&env, &facts, mode);

    let mounts = plan_store_mounts(config, &roots, &view)
        .await
        .map_err(|error| fail(error.phase(), &error))?;
    let environment = env.display_name();
    rewrite_spec(&mut spec, &overlay, &mounts, &environment, &command)
        .map_err(|error| fail(Phase::Rewrite, &error))?;

    let gc_root = gc_root::add_root(
        &config.gc_roots_dir,
        &container.namespace,
        &container.id,
        &view,
    )
    .map_err(|error| fail(Phase::Install, &error))?;
    let bundle_path = container.bundle.clone();
    if let Err(error) = bundle::write_spec(&bundle_path, &spec) {
        let _ = gc_root::remove_root(&config.gc_roots_dir, &container.namespace, &container.id);
        return Err(fail(Phase::Rewrite, &error));
    }
    drop(gc_guard);

    tracing::info!(
        container = %container.id,
        pod = %report.pod,
        environment = %environment,
        view = %view,
        mounts = mounts.count(),
        activate_mode = %mode,
        skip_exec,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rewrote container spec"
    );
    Ok(Prepared::Rewritten {
        environment,
        overlay: if skip_exec {
            EnvOverlay::none()
        } else {
            overlay
        },
        gc_root,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("hold nix's gc lock in {}: {source}", dir.display())]
struct GcGuardError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A trust failure (signature, hash, content address) is a verification failure; the rest of a
/// fetch failure is the fetch itself or the local install.
fn fetch_phase(error: &FetchError) -> Phase {
    use nixlet_store::FetchCause as Cause;
    match error {
        FetchError::Install { .. } | FetchError::Local(_) => Phase::Install,
        // A build that does not give the locked paths is a verification failure too.
        FetchError::FlakeBuild { problem, .. } if problem.is_mismatch() => Phase::Verify,
        FetchError::Path { cause, .. } => match **cause {
            Cause::Unsigned
            | Cause::UnsignedNotContentAddressed { .. }
            | Cause::UntrustedKeys { .. }
            | Cause::InvalidSignature { .. }
            | Cause::ContentAddressNotForPath { .. }
            | Cause::ForgedContentAddress { .. }
            | Cause::ContentAddress(_)
            | Cause::NarHashMismatch { .. }
            | Cause::NarSizeMismatch { .. }
            | Cause::MalformedNar { .. } => Phase::Verify,
            Cause::Local(_) => Phase::Install,
            _ => Phase::Fetch,
        },
        _ => Phase::Fetch,
    }
}

/// The merged view of every realised output and what they propagate in `mode`, with the lock
/// file and the activation scripts. Like Flox's `run` and `dev` outputs, the two modes give
/// different views only when a package propagates build inputs.
async fn build_view(
    env: &ResolvedEnv,
    reference: &EnvRef,
    mode: ActivateMode,
    config: &NodeConfig,
) -> Result<StorePath, Box<dyn std::error::Error + Send + Sync>> {
    let explicit: Vec<ViewInput> = env
        .packages
        .iter()
        .flat_map(|package| {
            package.outputs.iter().map(|output| ViewInput {
                path: output.store_path.clone(),
                priority: package.priority,
                to_install: output.to_install,
            })
        })
        .collect();
    let propagation = match mode {
        ActivateMode::Dev => Propagation::WithBuildInputs,
        ActivateMode::Run => Propagation::UserEnvPackages,
    };
    // A few small reads per output, so done at every Create: the view cache's key needs them.
    let inputs =
        tokio::task::spawn_blocking(move || with_propagated(&explicit, propagation)).await?;
    let mut files: Vec<ViewFile> = activation_files(env)
        .into_iter()
        .map(|file| ViewFile {
            relative_path: file.relative_path,
            contents: file.contents.into_bytes(),
            executable: file.executable,
        })
        .collect();
    if let Some(lock) = &env.manifest_lock {
        files.push(ViewFile {
            relative_path: VIEW_LOCK_FILE.to_string(),
            contents: lock.clone(),
            executable: false,
        });
    }
    let name = format!("nixlet-env-{}-{}", reference.owner, reference.name);
    let cache = ViewCache::new(&config.state_dir);
    let key = view_key(env, &name, &inputs, &files);
    if let Some(view) = cache.lookup(&key) {
        note_view_installed(config, &view);
        return Ok(view);
    }
    // The closure's bill of materials; deterministic, so the view's path stays content-addressed.
    let sbom = {
        let (env, nix_db) = (env.clone(), config.nix_db.clone());
        tokio::task::spawn_blocking(move || environment_sbom(&env, &nix_db)).await??
    };
    files.push(ViewFile {
        relative_path: SBOM_VIEW_PATH.to_string(),
        contents: sbom,
        executable: false,
    });
    let tree = tokio::task::spawn_blocking(move || ViewTree::merge(&inputs, &files)).await??;
    for (name, loser) in &tree.shadowed {
        tracing::debug!(file = %name, shadowed = %loser, "file collision resolved by priority");
    }
    let state_dir = nix_state_dir(&config.nix_db);
    let view = install_view(&tree, &name, &config.nix_db, &state_dir).await?;
    note_view_installed(config, &view);
    cache.remember(&key, &view);
    Ok(view)
}

/// nixlet's GC collects only what nixlet installed; a view nobody records would keep its whole
/// closure alive forever. The record's last use also keeps GC's grace period over the view
/// until the container's root exists. A failed record costs disk, not the container.
fn note_view_installed(config: &NodeConfig, view: &StorePath) {
    if let Err(error) = nixlet_store::install_record::note_installed(
        &config.install_record(),
        view,
        "environment view",
    ) {
        tracing::warn!(view = %view, error = %error, "cannot record the environment view as installed");
    }
}

fn view_facts(view: &StorePath) -> ViewFacts {
    let root = view.to_path_buf();
    ViewFacts {
        path: view.to_string(),
        has_ca_bundle: root.join(CA_BUNDLE).is_file(),
        dev: DevFacts {
            python_site_packages: python_site_packages(&root),
            has_cmake: root.join("bin/cmake").exists(),
            has_java: root.join("bin/java").exists(),
            has_jupyter: root.join("share/jupyter").is_dir(),
            has_rust_src: root.join("rustc-std-workspace-std").is_dir(),
        },
    }
}

/// `lib/pythonX.Y/site-packages` for the view's `bin/python3`. Flox asks the interpreter for
/// its version; nixlet reads it from the store path `bin/python3` leads to
/// (`…-python3-3.12.4/bin/python3.12`), so that nothing from the environment runs on the host.
fn python_site_packages(root: &Path) -> Option<String> {
    let python = std::fs::canonicalize(root.join("bin/python3")).ok()?;
    let name = python.file_name()?.to_str()?;
    let version = name.strip_prefix("python")?;
    let dir = format!("lib/python{version}/site-packages");
    root.join(&dir).is_dir().then_some(dir)
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the environment has an activation hook or profile script, but no bash in its closure \
     (looked for {bash}); add bash to [install]"
)]
struct NoBash {
    bash: String,
}

fn command_plan(env: &ResolvedEnv, view: &ViewFacts) -> Result<CommandPlan, NoBash> {
    let activation = if env.needs_activation() {
        let bash = format!("{}/bin/bash", view.path);
        if !Path::new(&bash).exists() {
            return Err(NoBash { bash });
        }
        Some((bash, view.path.clone()))
    } else {
        None
    };
    if let Some(user) = &env.containerize.user {
        tracing::info!(user = %user, "[containerize.config] user is not applied: the pod's securityContext decides");
    }
    Ok(CommandPlan {
        default_cmd: env.containerize.cmd.clone(),
        activation,
        working_dir: env.containerize.working_dir.clone(),
    })
}

/// Runs blocking work (files, SQLite, the HTTP environment source) off the async workers.
async fn blocking<T, E>(
    phase: Phase,
    reference: Option<String>,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, CreateError>
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CreateError::new(phase, reference, &error)),
        Err(join) => Err(CreateError::new(phase, reference, &join)),
    }
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
