//! Fetching the closure of some store paths: the public entry point of this crate's binary
//! cache client.
//!
//! The walk follows References from the roots, skipping paths that are already valid (their
//! closure is then valid too, by Nix's invariant, and is read from the database). Every missing
//! path gets its own task: tasks download and unpack in parallel (bounded), and each waits for
//! its dependencies to be installed before installing itself, so the store and the database
//! only ever gain paths whose references are there. A failure stops only the paths that depend
//! on it; whatever else was installed stays, and a retry continues from there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use nixlet_manifest::{StorePath, STORE_DIR};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::fetch_error::{FetchCause, FetchError, LocalError};
use crate::fetch_path::{blocking, fetch_path, lock_db, PathOutcome, PathPlan, PathState, Run};
use crate::fetch_progress::FetchProgress;
use crate::flake_build::{self, FlakeRecipe};
use crate::http_client::{HttpClient, RetryPolicy};
use crate::install::StoreDir;
use crate::install_record::{now_secs, InstallRecord};
use crate::nix_cli_backend::NixCliSubstituter;
use crate::path_lock::GcLock;
use crate::registration::NixDbWriter;
use crate::substituter::{Substituter, SubstituterBackend, SubstituterConfig};
use crate::trust;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Accept only paths signed by a trusted key. When off, an unsigned path is still accepted
    /// only if its content address is confirmed from the downloaded bytes.
    pub require_signatures: bool,
    /// NAR requests in flight at once: what hides a cache's round trips.
    pub parallel_downloads: usize,
    /// NARs decompressed, hashed and unpacked at once: the CPU-bound half of a download. More
    /// than the cores buys nothing and costs CPU (each xz decoder has a dictionary of up to
    /// 64 MiB; many of them evict each other from the CPU caches). The other requests keep
    /// their answers waiting in the socket until a slot frees.
    pub parallel_unpacks: usize,
    /// The Nix database; when the file does not exist the node has no Nix, paths are not
    /// registered, and a path counts as valid when it is on disk.
    pub nix_db: PathBuf,
    /// Nix's state directory, for `gc.lock`.
    pub nix_state_dir: PathBuf,
    pub connect_timeout: Duration,
    /// Whole-request limit for narinfo and nix-cache-info.
    pub request_timeout: Duration,
    /// How long a NAR download may stall; also the window its speed is judged over.
    pub read_timeout: Duration,
    /// A NAR download bringing less than this per second over a whole `read_timeout` window
    /// fails as too slow (`speed_floor.rs`); 0 accepts any trickle.
    pub min_bytes_per_sec: u64,
    /// Tries per request on transient failures (5xx, connection errors, timeouts).
    pub attempts: u32,
    /// Wait before the second try, doubled for each further one.
    pub retry_backoff: Duration,
    /// How long "this cache does not have the path" is remembered.
    pub negative_cache_ttl: Duration,
    /// nixlet's record of the paths it installed (`install_record.rs`), which `nixlet gc`
    /// collects from; `None` records nothing (and such paths are never collected by nixlet).
    pub install_record: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            require_signatures: true,
            parallel_downloads: 8,
            parallel_unpacks: std::thread::available_parallelism().map_or(2, |n| n.get()),
            nix_db: PathBuf::from(crate::DEFAULT_NIX_DB),
            nix_state_dir: PathBuf::from("/nix/var/nix"),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            // 60 KiB a minute: far below any real cache, far above a trickle.
            min_bytes_per_sec: 1024,
            attempts: 3,
            retry_backoff: Duration::from_millis(500),
            negative_cache_ttl: Duration::from_secs(30),
            install_record: None,
        }
    }
}

/// What a closure fetch did, for logs and measurements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchSummary {
    /// Paths this call downloaded and installed.
    pub paths_fetched: usize,
    /// Paths `nix build` made valid for flake packages no cache had (`flake_build.rs`): their
    /// outputs, and whatever Nix substituted or built for them.
    pub paths_built: usize,
    /// Paths of the closure that were valid already (or were installed meanwhile by another
    /// process).
    pub paths_already_valid: usize,
    /// Bytes received from caches (compressed), failed attempts included.
    pub bytes_downloaded: u64,
    /// Uncompressed NAR bytes of the fetched paths.
    pub nar_bytes: u64,
    /// The whole closure of the roots, sorted.
    pub closure: Vec<StorePath>,
    pub elapsed: Duration,
    /// Paths fetched and their NAR bytes, by substituter URL (nixlet's own fetch only; the Nix
    /// CLI fallback does not say where each path came from).
    pub by_substituter: BTreeMap<String, SubstituterTally>,
}

/// What one substituter delivered in one closure fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubstituterTally {
    pub paths: usize,
    pub nar_bytes: u64,
}

/// Fetches closures from the configured substituters into `/nix/store`.
#[derive(Debug, Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpClient,
    substituters: Vec<Arc<Substituter>>,
    /// Fallbacks, by priority, tried when nixlet's own fetch fails.
    nix_cli: Vec<NixCliSubstituter>,
    options: FetchOptions,
    /// (substituter index, hash part) → when the cache said it does not have the path.
    negative: Mutex<HashMap<(usize, String), Instant>>,
}

/// The summary of a fetch of `roots` that has nothing to do: `Some` when every path of their
/// closure is registered in the Nix database at `nix_db` and present on disk, `None` when
/// something is missing (or the node has no Nix database to tell).
///
/// Needs no [`Fetcher`]: a shim asks this first, so that a node holding the closure neither
/// asks a cache anything nor pays for building an HTTP client (a dead cache cannot hold up,
/// or even slow down, a warm pod).
pub async fn already_complete(nix_db: &Path, roots: &[StorePath]) -> Option<FetchSummary> {
    let started = Instant::now();
    let store = crate::LocalStore::new(nix_db);
    let queried = roots.to_vec();
    let closure = tokio::task::spawn_blocking(move || store.closure(&queried))
        .await
        .ok()?
        .ok()?;
    tracing::debug!(
        roots = roots.len(),
        closure = closure.len(),
        "closure complete on the node"
    );
    Some(FetchSummary {
        paths_already_valid: closure.len(),
        closure,
        elapsed: started.elapsed(),
        ..FetchSummary::default()
    })
}

impl Fetcher {
    pub fn new(
        substituters: Vec<SubstituterConfig>,
        options: FetchOptions,
    ) -> Result<Fetcher, FetchError> {
        let (nix_cli, substituters): (Vec<_>, Vec<_>) = substituters
            .iter()
            .partition(|config| config.backend == SubstituterBackend::NixCli);
        let substituters = substituters
            .into_iter()
            .map(|config| Substituter::new(config).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut nix_cli = nix_cli
            .into_iter()
            .map(NixCliSubstituter::new)
            .collect::<Result<Vec<_>, _>>()?;
        // Stable: equal priorities keep the config's order.
        nix_cli.sort_by_key(|cli| cli.priority.unwrap_or(crate::cache_info::DEFAULT_PRIORITY));
        let http = HttpClient::new(
            options.connect_timeout,
            options.read_timeout,
            options.request_timeout,
            RetryPolicy {
                attempts: options.attempts,
                first_backoff: options.retry_backoff,
            },
        )
        .map_err(FetchError::HttpClient)?
        .with_min_bytes_per_sec(options.min_bytes_per_sec);
        Ok(Fetcher {
            inner: Arc::new(Inner {
                http,
                substituters,
                nix_cli,
                options,
                negative: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn options(&self) -> &FetchOptions {
        &self.inner.options
    }

    /// Makes every path of the closure of `roots` valid in `/nix/store`.
    pub async fn fetch_closure(&self, roots: &[StorePath]) -> Result<FetchSummary, FetchError> {
        self.fetch_closure_with_progress(roots, &[], Arc::default())
            .await
    }

    /// [`Fetcher::fetch_closure`], updating `progress` as it goes, and building on the node
    /// those of the `recipes` (an environment's flake packages, whose outputs are among `roots`)
    /// that no cache has, when a `nix-cli` substituter has `build_flakes = true`.
    ///
    /// Order: nixlet's own fetch; when it fails, each `nix-cli` substituter's
    /// `nix-store --realise`; when those fail too, `nix build` of the flake packages whose
    /// outputs are still missing (`flake_build.rs`), then both again for the rest of the
    /// closure. Each success is checked again as a native fetch would.
    pub async fn fetch_closure_with_progress(
        &self,
        roots: &[StorePath],
        recipes: &[FlakeRecipe],
        progress: Arc<FetchProgress>,
    ) -> Result<FetchSummary, FetchError> {
        let started = Instant::now();
        if let Some(summary) = already_complete(&self.inner.options.nix_db, roots).await {
            return Ok(summary);
        }
        let substitution = match self.substitute(roots, Arc::clone(&progress)).await {
            Ok(summary) => return Ok(summary),
            Err(error) => error,
        };
        let paths_built = match self.build_flakes(recipes, substitution).await {
            Ok(built) => built,
            Err(error) => return Err(*error),
        };
        let mut summary = self.substitute(roots, progress).await?;
        summary.paths_built = paths_built;
        summary.paths_already_valid = summary.paths_already_valid.saturating_sub(paths_built);
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Builds the recipes whose outputs are not valid with the first `build_flakes` substituter
    /// (by priority) that succeeds; returns how many paths the builds made valid. `Err` is the
    /// error to report: `substitution` itself when there is nothing to build or nobody to
    /// build it.
    async fn build_flakes(
        &self,
        recipes: &[FlakeRecipe],
        substitution: FetchError,
    ) -> Result<usize, Box<FetchError>> {
        let builders: Vec<&NixCliSubstituter> = self
            .inner
            .nix_cli
            .iter()
            .filter(|cli| cli.build_flakes)
            .collect();
        let missing = self.recipes_missing(recipes).await;
        if builders.is_empty() || missing.is_empty() {
            return Err(Box::new(substitution));
        }
        tracing::warn!(error = %substitution, flake_packages = missing.len(), "no cache delivered the closure; building flake packages");
        let require_signatures = self.inner.options.require_signatures;
        let mut paths_built = 0;
        for recipe in missing {
            let since = now_secs();
            let mut failures = Vec::new();
            let mut outcome = None;
            for cli in &builders {
                match flake_build::build(cli, recipe, require_signatures).await {
                    Ok(built) => {
                        outcome = Some((cli, built));
                        break;
                    }
                    // Another substituter may have what this one lacked.
                    Err(flake_build::FlakeBuildProblem::Nix(mut failed)) => {
                        failures.append(&mut failed)
                    }
                    // The recipe itself is unusable: the same with any substituter.
                    Err(problem) => return Err(self.flake_error(recipe, problem, substitution)),
                }
            }
            let Some((cli, built)) = outcome else {
                let problem = flake_build::FlakeBuildProblem::Nix(failures);
                return Err(self.flake_error(recipe, problem, substitution));
            };
            // What Nix made valid, right or wrong, is nixlet's doing: recorded so that nixlet
            // gc reclaims it once unused (a wrong output is then never rooted by anyone).
            let reported: Vec<StorePath> = built.values().cloned().collect();
            let closure = self.valid_closure(&reported).await;
            let origin = format!("nix build {} (via {})", recipe.flake, cli.url);
            paths_built += self.note_nix_cli_installs(&closure, since, &origin).await;
            if let Err(problem) = recipe.check_built(&built) {
                return Err(self.flake_error(recipe, problem, substitution));
            }
            tracing::info!(environment = %recipe.environment, install_id = %recipe.install_id, flake = %recipe.flake, "flake package built as locked");
        }
        Ok(paths_built)
    }

    fn flake_error(
        &self,
        recipe: &FlakeRecipe,
        problem: flake_build::FlakeBuildProblem,
        substitution: FetchError,
    ) -> Box<FetchError> {
        Box::new(FetchError::FlakeBuild {
            environment: recipe.environment.clone(),
            install_id: recipe.install_id.clone(),
            installable: recipe.flake.to_string(),
            problem: Box::new(problem),
            substitution: Box::new(substitution),
        })
    }

    /// The recipes with an output the Nix database does not hold as valid.
    async fn recipes_missing<'a>(&self, recipes: &'a [FlakeRecipe]) -> Vec<&'a FlakeRecipe> {
        if recipes.is_empty() {
            return Vec::new();
        }
        let db = self.inner.options.nix_db.clone();
        let outputs: Vec<StorePath> = recipes
            .iter()
            .flat_map(|recipe| recipe.outputs.values().cloned())
            .collect();
        let valid: BTreeSet<StorePath> = tokio::task::spawn_blocking(move || {
            crate::store_graph::path_infos(&db, &outputs).map(|infos| {
                infos
                    .into_iter()
                    .filter(|(_, info)| info.is_some())
                    .map(|(path, _)| path)
                    .collect()
            })
        })
        .await
        .ok()
        .and_then(Result::ok)
        // No database: nothing is valid, and `nix build` will say why it cannot run.
        .unwrap_or_default();
        recipes
            .iter()
            .filter(|recipe| recipe.outputs.values().any(|path| !valid.contains(path)))
            .collect()
    }

    /// The closure of `paths` in the Nix database; just `paths` if it cannot be read.
    async fn valid_closure(&self, paths: &[StorePath]) -> Vec<StorePath> {
        let store = crate::LocalStore::new(&self.inner.options.nix_db);
        let queried = paths.to_vec();
        tokio::task::spawn_blocking(move || store.closure(&queried))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| paths.to_vec())
    }

    /// nixlet's own fetch, then, when it fails, each `nix-cli` substituter's `nix-store
    /// --realise` in turn (`nix_cli_backend.rs`).
    async fn substitute(
        &self,
        roots: &[StorePath],
        progress: Arc<FetchProgress>,
    ) -> Result<FetchSummary, FetchError> {
        let native = match self.fetch_native(roots, Arc::clone(&progress)).await {
            Ok(summary) => return Ok(summary),
            Err(error) if self.inner.nix_cli.is_empty() => return Err(error),
            Err(error) => error,
        };
        tracing::warn!(error = %native, "nixlet's own fetch failed; falling back to the nix cli");
        let started = Instant::now();
        let mut failures = Vec::new();
        for cli in &self.inner.nix_cli {
            let since = now_secs();
            match cli
                .realise(roots, self.inner.options.require_signatures)
                .await
            {
                Ok(()) => {
                    let mut summary = self.fetch_native(roots, progress).await?;
                    let installed = self
                        .note_nix_cli_installs(
                            &summary.closure,
                            since,
                            &format!("nix-cli {}", cli.url),
                        )
                        .await;
                    summary.paths_fetched += installed;
                    summary.paths_already_valid =
                        summary.paths_already_valid.saturating_sub(installed);
                    summary.elapsed = started.elapsed();
                    return Ok(summary);
                }
                Err(cause) => {
                    tracing::warn!(substituter = %cli.url, error = %cause, "nix cli fetch failed");
                    failures.push(format!("{}: {cause}", cli.url));
                }
            }
        }
        Err(FetchError::NixCliFallback {
            roots: roots
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            native: Box::new(native),
            failures: failures.join("; "),
        })
    }

    /// Records the paths of `closure` that Nix registered since `since` as nixlet's (it fetched
    /// or built them on nixlet's behalf), from `origin`; returns how many.
    async fn note_nix_cli_installs(
        &self,
        closure: &[StorePath],
        since: i64,
        origin: &str,
    ) -> usize {
        let options = &self.inner.options;
        let (db, record) = (options.nix_db.clone(), options.install_record.clone());
        let (closure, origin) = (closure.to_vec(), origin.to_string());
        tokio::task::spawn_blocking(move || {
            let infos = match crate::store_graph::path_infos(&db, &closure) {
                Ok(infos) => infos,
                Err(error) => {
                    tracing::warn!(%error, "cannot tell which paths the nix cli installed");
                    return 0;
                }
            };
            let fresh: Vec<StorePath> = infos
                .into_iter()
                .filter(|(_, info)| info.as_ref().is_some_and(|i| i.registration_time >= since))
                .map(|(path, _)| path)
                .collect();
            if let Some(record) = record.as_deref().and_then(open_record) {
                let mut record = lock_record(&record);
                for path in &fresh {
                    if let Err(error) = record.record_installed(path, &origin, now_secs()) {
                        tracing::warn!(path = %path, %error, "cannot record an installed path; nixlet gc will not collect it");
                    }
                }
            }
            fresh.len()
        })
        .await
        .unwrap_or(0)
    }

    /// nixlet's own fetch: the walk over its http(s) and file substituters.
    async fn fetch_native(
        &self,
        roots: &[StorePath],
        progress: Arc<FetchProgress>,
    ) -> Result<FetchSummary, FetchError> {
        let started = Instant::now();
        let inner = &self.inner;
        let store = open_store().await?;
        let gc = GcLock::shared(&inner.options.nix_state_dir)
            .await
            .map_err(|e| {
                FetchError::Local(LocalError::io(
                    "lock",
                    inner.options.nix_state_dir.join("gc.lock"),
                    e,
                ))
            })?
            .map(Arc::new);
        let db = open_db(&inner.options.nix_db).await?;
        let record = match inner.options.install_record.clone() {
            Some(path) => tokio::task::spawn_blocking(move || open_record(&path))
                .await
                .unwrap_or(None),
            None => None,
        };
        let run = Arc::new(Run {
            http: inner.http.clone(),
            store,
            db,
            gc,
            downloads: Arc::new(Semaphore::new(inner.options.parallel_downloads.max(1))),
            unpacks: Arc::new(Semaphore::new(inner.options.parallel_unpacks.max(1))),
            downloaded: Default::default(),
            progress: Arc::clone(&progress),
        });
        let order = self.substituter_order().await;

        let walk = self.walk(&run, &order, roots).await?;
        check_acyclic(&walk.plans)?;
        let missing = walk.plans.len();
        progress.planned(
            missing,
            walk.plans.values().map(|plan| plan.info.nar_size).sum(),
        );
        tracing::info!(
            roots = roots.len(),
            closure = walk.closure.len(),
            missing,
            "fetching missing store paths"
        );

        let mut senders = HashMap::new();
        let mut receivers = HashMap::new();
        for path in walk.plans.keys() {
            let (sender, receiver) = watch::channel(PathState::Pending);
            senders.insert(path.clone(), sender);
            receivers.insert(path.clone(), receiver);
        }
        let mut tasks = JoinSet::new();
        for (path, plan) in walk.plans {
            let dependencies = plan
                .info
                .dependencies()
                .filter_map(|d| receivers.get(d).map(|r| (d.clone(), r.clone())))
                .collect();
            let sender = senders.remove(&path).expect("one sender per planned path");
            let run = Arc::clone(&run);
            let record = record.clone();
            let origin = plan.substituter.url.clone();
            tasks.spawn(async move {
                let result = fetch_path(run, Arc::new(plan), dependencies).await;
                let _ = sender.send(if result.is_ok() {
                    PathState::Valid
                } else {
                    PathState::Failed
                });
                if let (Ok(PathOutcome::Fetched { .. }), Some(record)) = (&result, record) {
                    // Spawned before this task can next yield, so a fetch its caller gives up
                    // on still records what it installed.
                    note_installed(record, path.clone(), origin.clone()).await;
                }
                (path, origin, result)
            });
        }
        drop(receivers);

        let mut summary = FetchSummary {
            paths_already_valid: walk.valid,
            closure: walk.closure.into_iter().collect(),
            ..FetchSummary::default()
        };
        let mut errors = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, origin, Ok(PathOutcome::Fetched { nar_size }))) => {
                    summary.paths_fetched += 1;
                    summary.nar_bytes += nar_size;
                    let tally = summary.by_substituter.entry(origin).or_default();
                    tally.paths += 1;
                    tally.nar_bytes += nar_size;
                    progress.path_done();
                }
                Ok((_, _, Ok(PathOutcome::AlreadyValid))) => {
                    summary.paths_already_valid += 1;
                    progress.path_done();
                }
                Ok((path, _, Err(error))) => {
                    tracing::warn!(path = %path, %error, "store path not fetched");
                    errors.push(error);
                }
                Err(join) => errors.push(FetchError::Local(LocalError::io(
                    "run fetch task",
                    STORE_DIR,
                    std::io::Error::other(join.to_string()),
                ))),
            }
        }
        summary.bytes_downloaded = run.downloaded.load(Ordering::Relaxed);
        summary.elapsed = started.elapsed();
        if !errors.is_empty() {
            // Report a root cause, not one of the dependents it took down.
            let index = errors
                .iter()
                .position(|e| !matches!(e, FetchError::DependencyFailed { .. }))
                .unwrap_or(0);
            return Err(errors.swap_remove(index));
        }
        if let Some(record) = record {
            // Every path of the closure was just asked for: that is a use.
            let closure = summary.closure.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = lock_record(&record).touch(&closure, now_secs()) {
                    tracing::warn!(%error, "cannot record the use of a closure");
                }
            })
            .await;
        }
        tracing::info!(
            paths_fetched = summary.paths_fetched,
            paths_already_valid = summary.paths_already_valid,
            bytes_downloaded = summary.bytes_downloaded,
            nar_bytes = summary.nar_bytes,
            elapsed_ms = summary.elapsed.as_millis() as u64,
            "closure fetched"
        );
        Ok(summary)
    }

    /// Substituters by priority (configured, else the cache's own), then by config order.
    async fn substituter_order(&self) -> Vec<(usize, Arc<Substituter>)> {
        let inner = &self.inner;
        // Read every nix-cache-info at once; a cache that fails here is reported per path.
        futures::future::join_all(
            inner
                .substituters
                .iter()
                .map(|substituter| substituter.cache_info(&inner.http)),
        )
        .await;
        let mut order: Vec<(usize, Arc<Substituter>)> =
            inner.substituters.iter().cloned().enumerate().collect();
        order.sort_by_key(|(index, substituter)| (substituter.priority(), *index));
        order
    }

    async fn walk(
        &self,
        run: &Arc<Run>,
        order: &[(usize, Arc<Substituter>)],
        roots: &[StorePath],
    ) -> Result<Walk, FetchError> {
        let mut walk = Walk::default();
        let lookups = Arc::new(Semaphore::new(
            2 * self.inner.options.parallel_downloads.max(1),
        ));
        let mut pending = FuturesUnordered::new();
        for root in roots {
            if walk.closure.insert(root.clone()) {
                pending.push(self.resolve(run, order, root.clone(), Arc::clone(&lookups)));
            }
        }
        while let Some(resolved) = pending.next().await {
            let references = match resolved? {
                Resolved::Valid { references } => {
                    walk.valid += 1;
                    references
                }
                Resolved::Missing(plan) => {
                    let references: Vec<StorePath> = plan.info.dependencies().cloned().collect();
                    walk.plans.insert(plan.info.store_path.clone(), *plan);
                    references
                }
            };
            for reference in references {
                if walk.closure.insert(reference.clone()) {
                    pending.push(self.resolve(run, order, reference, Arc::clone(&lookups)));
                }
            }
        }
        Ok(walk)
    }

    async fn resolve(
        &self,
        run: &Arc<Run>,
        order: &[(usize, Arc<Substituter>)],
        path: StorePath,
        lookups: Arc<Semaphore>,
    ) -> Result<Resolved, FetchError> {
        let _permit = lookups.acquire_owned().await;
        let local = |cause| FetchError::Install {
            path: path.clone(),
            cause,
        };
        if run.is_valid(&path).await.map_err(local)? {
            let references = match &run.db {
                Some(db) => {
                    let db = Arc::clone(db);
                    let queried = path.clone();
                    blocking(move || lock_db(&db).references(&queried))
                        .await
                        .map_err(local)?
                }
                // Without a database the references are only known from a cache; a path on
                // disk that no cache knows is taken as it is.
                None => match self.find_narinfo(order, &path).await {
                    Ok(plan) => plan.info.references.iter().cloned().collect(),
                    Err(_) => Vec::new(),
                },
            };
            let references = references.into_iter().filter(|r| *r != path).collect();
            return Ok(Resolved::Valid { references });
        }
        Ok(Resolved::Missing(Box::new(
            self.find_narinfo(order, &path).await?,
        )))
    }

    /// The first substituter, by priority, with a trustworthy narinfo for `path`.
    async fn find_narinfo(
        &self,
        order: &[(usize, Arc<Substituter>)],
        path: &StorePath,
    ) -> Result<PathPlan, FetchError> {
        let inner = &self.inner;
        let mut first_error: Option<(String, FetchCause)> = None;
        for (index, substituter) in order {
            let key = (*index, path.hash_part().to_string());
            if self.recently_absent(&key) {
                continue;
            }
            if let Err(cause) = substituter.cache_info(&inner.http).await {
                first_error.get_or_insert((substituter.url.clone(), cause));
                continue;
            }
            let info = match substituter.narinfo(&inner.http, path).await {
                Ok(Some(info)) => info,
                Ok(None) => {
                    tracing::debug!(path = %path, substituter = %substituter.url, "not in this cache");
                    self.remember_absent(key);
                    continue;
                }
                Err(cause) => {
                    first_error.get_or_insert((substituter.url.clone(), cause));
                    continue;
                }
            };
            match trust::check_narinfo(&info, &substituter.keys, inner.options.require_signatures) {
                Ok(trust) => {
                    tracing::debug!(path = %path, substituter = %substituter.url, ?trust, "narinfo accepted");
                    return Ok(PathPlan {
                        info,
                        substituter: Arc::clone(substituter),
                        trust,
                    });
                }
                Err(cause) => {
                    tracing::warn!(path = %path, substituter = %substituter.url, error = %cause, "narinfo rejected");
                    first_error.get_or_insert((substituter.url.clone(), cause));
                }
            }
        }
        Err(match first_error {
            Some((substituter, cause)) => FetchError::Path {
                path: path.clone(),
                substituter,
                cause: Box::new(cause),
            },
            None => FetchError::NotFound {
                path: path.clone(),
                substituters: if inner.substituters.is_empty() {
                    "none configured".to_string()
                } else {
                    inner
                        .substituters
                        .iter()
                        .map(|s| s.url.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            },
        })
    }

    fn recently_absent(&self, key: &(usize, String)) -> bool {
        let ttl = self.inner.options.negative_cache_ttl;
        let mut negative = self
            .inner
            .negative
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match negative.get(key) {
            Some(when) if when.elapsed() < ttl => true,
            Some(_) => {
                negative.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember_absent(&self, key: (usize, String)) {
        if self.inner.options.negative_cache_ttl.is_zero() {
            return;
        }
        self.inner
            .negative
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, Instant::now());
    }
}

#[derive(Default)]
struct Walk {
    closure: BTreeSet<StorePath>,
    valid: usize,
    plans: BTreeMap<StorePath, PathPlan>,
}

enum Resolved {
    Valid { references: Vec<StorePath> },
    Missing(Box<PathPlan>),
}

async fn open_store() -> Result<Arc<StoreDir>, FetchError> {
    blocking(|| {
        // A node without Nix has no store yet; Nix's single-user layout is root-owned 0755.
        if !std::path::Path::new(STORE_DIR).exists() {
            std::fs::create_dir_all(STORE_DIR)
                .map_err(|e| LocalError::io("create", STORE_DIR, e))?;
        }
        StoreDir::open(STORE_DIR)
    })
    .await
    .map(Arc::new)
    .map_err(FetchError::Local)
}

fn open_record(path: &std::path::Path) -> Option<Arc<Mutex<InstallRecord>>> {
    match InstallRecord::open(path) {
        Ok(record) => Some(Arc::new(Mutex::new(record))),
        Err(error) => {
            // Not a reason to fail a Create: the paths are installed all the same, only nixlet
            // gc will not know them.
            tracing::warn!(%error, "cannot open the install record; fetched paths go unrecorded");
            None
        }
    }
}

fn lock_record(record: &Mutex<InstallRecord>) -> std::sync::MutexGuard<'_, InstallRecord> {
    record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn note_installed(record: Arc<Mutex<InstallRecord>>, path: StorePath, origin: String) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(error) = lock_record(&record).record_installed(&path, &origin, now_secs()) {
            tracing::warn!(path = %path, %error, "cannot record an installed path; nixlet gc will not collect it");
        }
    })
    .await;
}

async fn open_db(path: &std::path::Path) -> Result<Option<Arc<Mutex<NixDbWriter>>>, FetchError> {
    if !path.exists() {
        tracing::debug!(db = %path.display(), "no nix database: paths will not be registered");
        return Ok(None);
    }
    let path = path.to_path_buf();
    blocking(move || NixDbWriter::open(&path))
        .await
        .map(|db| Some(Arc::new(Mutex::new(db))))
        .map_err(FetchError::Local)
}

/// A cycle other than a self-reference would make its paths wait for each other forever (and
/// cannot come from Nix); refuse it up front.
fn check_acyclic(plans: &BTreeMap<StorePath, PathPlan>) -> Result<(), FetchError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&StorePath, Mark> = HashMap::new();
    for start in plans.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // Iterative depth-first search: closures can be deep.
        let mut stack: Vec<(&StorePath, Vec<&StorePath>)> = Vec::new();
        marks.insert(start, Mark::Visiting);
        stack.push((
            start,
            plans[start]
                .info
                .dependencies()
                .filter(|d| plans.contains_key(*d))
                .collect(),
        ));
        while let Some((node, children)) = stack.last_mut() {
            match children.pop() {
                Some(child) => match marks.get(child) {
                    Some(Mark::Visiting) => {
                        return Err(FetchError::ReferenceCycle {
                            path: (*node).clone(),
                            through: child.clone(),
                        })
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::Visiting);
                        let grandchildren = plans[child]
                            .info
                            .dependencies()
                            .filter(|d| plans.contains_key(*d))
                            .collect();
                        stack.push((child, grandchildren));
                    }
                },
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::narinfo::{Compression, NarInfo};

    fn plan(path: &StorePath, references: &[&StorePath]) -> PathPlan {
        PathPlan {
            info: NarInfo {
                store_path: path.clone(),
                url: "nar/x".into(),
                compression: Compression::None,
                nar_hash: [0; 32],
                nar_size: 1,
                references: references.iter().map(|r| (*r).clone()).collect(),
                deriver: None,
                signatures: vec![],
                ca: None,
                file_size: None,
            },
            substituter: Arc::new(
                Substituter::new(&SubstituterConfig {
                    url: "http://127.0.0.1:1".into(),
                    ..Default::default()
                })
                .unwrap(),
            ),
            trust: trust::Trust::Signed { key: "k".into() },
        }
    }

    fn p(digit: char, name: &str) -> StorePath {
        StorePath::parse(&format!(
            "/nix/store/{}-{name}",
            digit.to_string().repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn self_references_are_fine_but_cycles_are_refused() {
        let (a, b, c) = (p('1', "a"), p('2', "b"), p('3', "c"));
        let mut plans = BTreeMap::new();
        plans.insert(a.clone(), plan(&a, &[&a, &b]));
        plans.insert(b.clone(), plan(&b, &[&b, &c]));
        plans.insert(c.clone(), plan(&c, &[]));
        check_acyclic(&plans).unwrap();

        plans.insert(c.clone(), plan(&c, &[&a]));
        let error = check_acyclic(&plans).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the references of /nix/store/"),
            "{error}"
        );
    }

    #[test]
    fn fetching_is_send_so_the_shim_can_spawn_it() {
        fn require_send<T: Send>(_: &T) {}
        let fetcher = Fetcher::new(vec![], FetchOptions::default()).unwrap();
        let future = fetcher.fetch_closure(&[]);
        require_send(&future);
        let with_progress = fetcher.fetch_closure_with_progress(&[], &[], Arc::default());
        require_send(&with_progress);
    }

    #[tokio::test]
    async fn a_path_without_substituters_is_not_found() {
        let fetcher = Fetcher::new(
            vec![],
            FetchOptions {
                // A database path that does not exist: this test must not touch the real one.
                nix_db: "/nonexistent/db.sqlite".into(),
                nix_state_dir: "/nonexistent".into(),
                ..FetchOptions::default()
            },
        )
        .unwrap();
        let order = fetcher.substituter_order().await;
        let missing = p('0', "missing");
        let error = fetcher.find_narinfo(&order, &missing).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("store path {missing} is not in any substituter (asked none configured)")
        );
    }
}
