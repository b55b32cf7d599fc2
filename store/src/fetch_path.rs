//! Fetching one store path: lock, download and unpack (with retries), verify, wait for the
//! dependencies, install, register.
//!
//! The path lock and the temporary entry travel together in a [`Staging`] value, which the
//! blocking unpack thread owns while it works: if the caller gives up, the lock is released only
//! after the temporary entry is gone, so no other fetcher can ever share it.

use std::ffi::OsStr;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix_derivation::{HashAlgorithm, NixHash, NixHasher};
use nixlet_manifest::StorePath;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::fetch_error::{FetchCause, FetchError, LocalError};
use crate::fetch_progress::FetchProgress;
use crate::http_client::HttpClient;
use crate::install::{StoreDir, TempEntry};
use crate::nar_download::{buffered, decompressor, FailureSlot, NarDigest, NarReader};
use crate::nar_unpack::{self, UnpackError};
use crate::narinfo::NarInfo;
use crate::path_lock::{GcLock, PathLock};
use crate::registration::{NixDbWriter, Registration};
use crate::substituter::Substituter;
use crate::trust::{self, ContentHashPlan, Trust};

/// A path that is missing, with the narinfo and substituter chosen for it.
#[derive(Debug)]
pub struct PathPlan {
    pub info: NarInfo,
    pub substituter: Arc<Substituter>,
    pub trust: Trust,
}

/// Where a path of the closure stands, for its dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    Pending,
    Valid,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOutcome {
    Fetched {
        nar_size: u64,
    },
    /// Another process installed it while this one waited for the lock.
    AlreadyValid,
}

/// What one fetch of a closure shares between its paths.
pub struct Run {
    pub http: HttpClient,
    pub store: Arc<StoreDir>,
    pub db: Option<Arc<Mutex<NixDbWriter>>>,
    pub gc: Option<Arc<GcLock>>,
    pub downloads: Arc<Semaphore>,
    /// Taken by a download once its answer arrived, for decompressing and unpacking it.
    pub unpacks: Arc<Semaphore>,
    /// Compressed bytes received by this run.
    pub downloaded: AtomicU64,
    pub progress: Arc<FetchProgress>,
}

impl Run {
    /// Valid means registered (when the node has a database) *and* present on disk.
    pub async fn is_valid(&self, path: &StorePath) -> Result<bool, LocalError> {
        let name = path.base_name().to_string();
        let store = Arc::clone(&self.store);
        let db = self.db.clone();
        let path = path.clone();
        blocking(move || {
            if let Some(db) = db {
                if !lock_db(&db).is_registered(&path)? {
                    return Ok(false);
                }
            }
            store.exists(OsStr::new(&name))
        })
        .await
    }
}

pub fn lock_db(db: &Mutex<NixDbWriter>) -> std::sync::MutexGuard<'_, NixDbWriter> {
    db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs filesystem or database work off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LocalError> + Send + 'static,
) -> Result<T, LocalError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(LocalError::io(
                "run blocking store work",
                "/nix/store",
                std::io::Error::other(join.to_string()),
            ))
        })
}

/// The lock and the temporary entry of one path; dropping removes the entry, then unlocks.
struct Staging {
    temp: TempEntry,
    lock: PathLock,
    _gc: Option<Arc<GcLock>>,
}

/// Cancels the download when the fetch's future is dropped (its caller gave up), so the unpack
/// thread stops at once and drops the temporary entry and the lock.
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What the bytes of one successful attempt hashed to.
struct Measured {
    digest: NarDigest,
    /// For flat and text content addresses: the hash of the single file, `None` when the path
    /// is not one non-executable regular file.
    flat: Option<Option<NixHash>>,
}

pub async fn fetch_path(
    run: Arc<Run>,
    plan: Arc<PathPlan>,
    dependencies: Vec<(StorePath, watch::Receiver<PathState>)>,
) -> Result<PathOutcome, FetchError> {
    let path = plan.info.store_path.clone();
    let started = Instant::now();
    let install_error = |cause: LocalError| FetchError::Install {
        path: path.clone(),
        cause,
    };
    let path_error = |cause: FetchCause| FetchError::Path {
        path: path.clone(),
        substituter: plan.substituter.url.clone(),
        cause: Box::new(cause),
    };

    let lock = PathLock::acquire(run.store.path(), &path)
        .await
        .map_err(|e| {
            install_error(LocalError::io(
                "lock",
                run.store.path().join(path.base_name()),
                e,
            ))
        })?;
    // Claimed first, which removes whatever a killed fetch left under the temporary name.
    let temp = TempEntry::claim(&run.store, &path, &lock).map_err(install_error)?;
    // Someone (another shim, or Nix) may have installed it while we waited.
    if run.is_valid(&path).await.map_err(install_error)? {
        tracing::debug!(path = %path, "installed by another process meanwhile");
        return Ok(PathOutcome::AlreadyValid);
    }
    let mut staging = Staging {
        temp,
        lock,
        _gc: run.gc.clone(),
    };

    let permit = take_slot(&run.downloads, "download")
        .await
        .map_err(install_error)?;
    let cancel = CancellationToken::new();
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let nar = plan
        .substituter
        .nar_location(&plan.info)
        .map_err(path_error)?;
    let (extra_algorithm, flat_algorithm) = match &plan.info.ca {
        Some(ca) => match trust::content_hash_plan(ca).map_err(path_error)? {
            ContentHashPlan::Nar(algorithm) => (Some(algorithm), None),
            ContentHashPlan::FlatFile(algorithm) => (None, Some(algorithm)),
        },
        None => (None, None),
    };

    let policy = run.http.retry;
    let mut attempt = 1;
    let measured = loop {
        let result = match plan.substituter.open_nar(&run.http, &nar).await {
            Err(cause) => Err(cause),
            Ok(source) => {
                let unpacking = take_slot(&run.unpacks, "unpack")
                    .await
                    .map_err(install_error)?;
                let slot = FailureSlot::default();
                let counting = Arc::clone(&run);
                let on_bytes = move |bytes| {
                    counting.downloaded.fetch_add(bytes, Ordering::Relaxed);
                    counting.progress.downloaded(bytes);
                };
                let body = source.into_reader(
                    on_bytes,
                    slot.clone(),
                    cancel.clone(),
                    run.http.speed_floor,
                );
                let plan = Arc::clone(&plan);
                let url = nar.to_string();
                let cancel = cancel.clone();
                let joined = tokio::task::spawn_blocking(move || {
                    let result = unpack_attempt(
                        &staging,
                        body,
                        &plan.info,
                        url,
                        extra_algorithm,
                        flat_algorithm,
                        slot,
                        cancel,
                    );
                    drop(unpacking);
                    (staging, result)
                })
                .await;
                match joined {
                    Ok((back, result)) => {
                        staging = back;
                        result
                    }
                    Err(join) => {
                        return Err(install_error(LocalError::io(
                            "unpack",
                            run.store.path().join(path.base_name()),
                            std::io::Error::other(join.to_string()),
                        )))
                    }
                }
            }
        };
        match result {
            Ok(measured) => break measured,
            Err(cause) if cause.is_transient() && attempt < policy.attempts => {
                let wait = policy.backoff(attempt);
                tracing::warn!(path = %path, attempt, wait_ms = wait.as_millis() as u64, error = %cause, "nar download failed, retrying");
                staging.temp.clear().map_err(install_error)?;
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(cause) if cause.is_transient() && attempt > 1 => {
                return Err(path_error(FetchCause::GaveUp {
                    attempts: attempt,
                    last: Box::new(cause),
                }))
            }
            Err(cause) => return Err(path_error(cause)),
        }
    };
    drop(permit);

    let verified_ca = verify(&plan, &measured).map_err(path_error)?;

    for (dependency, mut state) in dependencies {
        let outcome = state
            .wait_for(|s| *s != PathState::Pending)
            .await
            .map(|s| *s);
        if !matches!(outcome, Ok(PathState::Valid)) {
            return Err(FetchError::DependencyFailed {
                path: path.clone(),
                dependency,
            });
        }
    }

    let registration = Registration {
        path: path.clone(),
        nar_hash: plan.info.nar_hash,
        nar_size: plan.info.nar_size,
        references: plan.info.references.clone(),
        deriver: plan.info.deriver.clone(),
        signatures: plan.info.signatures.clone(),
        ca: verified_ca,
    };
    let db = run.db.clone();
    blocking(move || install(staging, registration, db))
        .await
        .map_err(install_error)?;
    tracing::info!(
        path = %path,
        substituter = %plan.substituter.url,
        nar_size = plan.info.nar_size,
        compression = %plan.info.compression,
        attempts = attempt,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fetched store path"
    );
    Ok(PathOutcome::Fetched {
        nar_size: plan.info.nar_size,
    })
}

#[allow(clippy::too_many_arguments)]
fn unpack_attempt(
    staging: &Staging,
    body: impl Read + Send + 'static,
    info: &NarInfo,
    url: String,
    extra_algorithm: Option<HashAlgorithm>,
    flat_algorithm: Option<HashAlgorithm>,
    slot: FailureSlot,
    cancel: CancellationToken,
) -> Result<Measured, FetchCause> {
    let decompressed =
        decompressor(info.compression, body).map_err(|e| FetchCause::Decompress {
            compression: info.compression,
            url: url.clone(),
            message: e.to_string(),
        })?;
    let reader = NarReader::new(
        decompressed,
        info.nar_size,
        extra_algorithm,
        slot.clone(),
        cancel,
        info.compression,
        url.clone(),
    );
    let mut nar = buffered(reader);
    let store = staging.temp.store();
    let unpacked = nar_unpack::unpack(&mut nar, store.fd(), staging.temp.name());
    if let Err(error) = unpacked {
        if let Some(cause) = slot.take() {
            return Err(cause);
        }
        return Err(match error {
            UnpackError::Nar(source) => FetchCause::MalformedNar { url, source },
            UnpackError::Read(error) => FetchCause::Transfer {
                url,
                message: error.to_string(),
            },
            UnpackError::Write { path, source } => FetchCause::Local(LocalError::io(
                "write",
                staging.temp.full_path().join(path),
                source,
            )),
        });
    }
    let digest = nar.into_inner().finish();
    let flat = flat_algorithm
        .map(|algorithm| hash_flat_file(store, staging.temp.name(), algorithm))
        .transpose()
        .map_err(|e| FetchCause::Local(LocalError::io("read", staging.temp.full_path(), e)))?;
    Ok(Measured { digest, flat })
}

/// The hash of the object at `name` as a flat file, `None` if it is not a non-executable
/// regular file (which a flat or text content address requires).
fn hash_flat_file(
    store: &StoreDir,
    name: &OsStr,
    algorithm: HashAlgorithm,
) -> std::io::Result<Option<NixHash>> {
    let stat = rustix::fs::statat(store.fd(), name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_mode & 0o111 != 0 {
        return Ok(None);
    }
    let fd = rustix::fs::openat(
        store.fd(),
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = std::fs::File::from(fd);
    let mut hasher = NixHasher::new(algorithm);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Some(hasher.finalize()))
}

/// Checks the bytes against the narinfo; returns the content address to record, verified.
fn verify(plan: &PathPlan, measured: &Measured) -> Result<Option<String>, FetchCause> {
    let info = &plan.info;
    if measured.digest.size != info.nar_size {
        return Err(FetchCause::NarSizeMismatch {
            expected: info.nar_size,
            actual: measured.digest.size.to_string(),
        });
    }
    if measured.digest.sha256 != info.nar_hash {
        return Err(FetchCause::NarHashMismatch {
            expected: info.nar_hash_nix32(),
            actual: format!("sha256:{}", crate::nix32::encode(&measured.digest.sha256)),
        });
    }
    let Some(ca) = &info.ca else {
        // Only signed paths get here without a content address (see trust::check_narinfo).
        debug_assert!(matches!(plan.trust, Trust::Signed { .. }));
        return Ok(None);
    };
    // Also for signed paths: the CA line is not covered by the signature, so it is recorded only
    // when the bytes confirm it, as Nix does.
    let actual = match trust::content_hash_plan(ca)? {
        ContentHashPlan::Nar(HashAlgorithm::Sha256) => {
            Some(NixHash::Sha256(measured.digest.sha256))
        }
        ContentHashPlan::Nar(_) => measured.digest.extra.clone(),
        ContentHashPlan::FlatFile(_) => measured.flat.clone().flatten(),
    };
    trust::verify_content(ca, actual.as_ref())?;
    Ok(Some(ca.to_nix_string()))
}

/// Moves the path into place and registers it; if registration fails, the path is removed
/// again, so the store never has an unregistered path that nixlet put there.
fn install(
    staging: Staging,
    registration: Registration,
    db: Option<Arc<Mutex<NixDbWriter>>>,
) -> Result<(), LocalError> {
    let Staging { temp, lock, _gc } = staging;
    let store = temp.store_handle();
    temp.install(&registration.path)?;
    if let Some(db) = db {
        if let Err(error) = lock_db(&db).register(&registration) {
            // Still under the path lock: nobody has trusted the unregistered path yet.
            if let Err(remove) = store.remove(OsStr::new(registration.path.base_name())) {
                tracing::error!(path = %registration.path, error = %remove, "cannot remove a path that failed to register");
            }
            return Err(error);
        }
    }
    drop(lock);
    Ok(())
}

/// One of `slots` (downloads or unpacks); they are never closed while a fetch runs.
async fn take_slot(
    slots: &Arc<Semaphore>,
    kind: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, LocalError> {
    Arc::clone(slots).acquire_owned().await.map_err(|_| {
        LocalError::io(
            "schedule",
            "/nix/store",
            std::io::Error::other(format!("{kind} slots closed")),
        )
    })
}
