//! The host's Nix store as the tests inspect and clean it: validity, closures, `nix-store --dump`
//! hashes, deletion that respects GC roots, and a guard that removes what a test made once its
//! node is gone.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const STORE_DIR: &str = "/nix/store";

/// Where the nixlet shim keeps one GC root per container it rewrote (its default).
pub const NIXLET_GC_ROOTS: &str = "/nix/var/nix/gcroots/nixlet";

/// The GC root the shim holds for container `id` of containerd namespace `k8s.io` (CRI's).
pub fn gc_root_of(container_id: &str) -> std::path::PathBuf {
    Path::new(NIXLET_GC_ROOTS).join(format!("k8s.io.{container_id}"))
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `nix <args>` with the `nix-command` feature on, whatever nix.conf says.
pub fn nix_command(args: &[&str]) -> Result<String> {
    run(Command::new("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args))
}

/// Whether the Nix database holds `path` as valid.
pub fn is_valid(path: &str) -> bool {
    Command::new("nix-store")
        .args(["--check-validity", path])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What is wrong with `path` as an installed store path: registered but missing, present but
/// not registered (a partial or stray entry at a final name), or contents that do not hash to
/// what the database says (`nix-store --verify-path`). `None` when it is absent and
/// unregistered (not installed) or valid.
pub fn invalid_reason(path: &str) -> Option<String> {
    let present = Path::new(path).symlink_metadata().is_ok();
    match (is_valid(path), present) {
        (false, false) => None,
        (true, false) => Some(format!("{path} is registered but not in the store")),
        (false, true) => Some(format!("{path} is in the store but not registered")),
        (true, true) => {
            let out = Command::new("nix-store")
                .args(["--verify-path", path])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "{path} does not match its registered hash: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Some(format!("{path}: cannot run nix-store --verify-path: {e}")),
            }
        }
    }
}

/// The closure of `path` as the Nix database has it.
pub fn closure_of(path: &str) -> Result<BTreeSet<String>> {
    Ok(
        run(Command::new("nix-store").args(["--query", "--requisites", path]))?
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Direct references of `path`, itself excluded.
pub fn references_of(path: &str) -> Result<BTreeSet<String>> {
    Ok(
        run(Command::new("nix-store").args(["--query", "--references", path]))?
            .lines()
            .filter(|p| *p != path)
            .map(str::to_owned)
            .collect(),
    )
}

/// sha256 (hex) of `nix-store --dump path`: equal for byte-identical store paths.
pub fn dump_hash(path: &str) -> Result<String> {
    let mut child = Command::new("nix-store")
        .args(["--dump", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running nix-store --dump")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stdout.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    if !child.wait()?.success() {
        bail!("nix-store --dump {path} failed");
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `nix-store --delete` of one path: `Err(stderr)` when Nix refuses (for instance because the
/// path is still alive).
pub fn try_delete(path: &str) -> std::result::Result<(), String> {
    let out = Command::new("nix-store")
        .args(["--delete", path])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Deletes those of `paths` that are on disk or registered, all in one `nix-store --delete`
/// (so that paths referring to each other go together); fails if Nix refuses.
pub fn delete_paths<'a>(paths: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let present: Vec<&String> = paths
        .into_iter()
        .filter(|p| Path::new(p).symlink_metadata().is_ok() || is_valid(p))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    run(Command::new("nix-store").arg("--delete").args(present))?;
    Ok(())
}

/// Entries directly in `/nix/store` whose name contains `pattern`: paths, derivations,
/// temporary directories and lock files alike.
pub fn store_entries_containing(pattern: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(STORE_DIR) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(pattern))
        .collect()
}

/// The installed environment views of `owner/name` (`/nix/store/<hash>-nixlet-env-owner-name`).
pub fn views_of(reference: &str) -> BTreeSet<String> {
    let suffix = view_suffix(reference);
    store_entries_containing(&suffix)
        .into_iter()
        .filter(|name| name.ends_with(&suffix) && name.len() == 32 + suffix.len())
        .map(|name| format!("{STORE_DIR}/{name}"))
        .collect()
}

fn view_suffix(reference: &str) -> String {
    format!("-nixlet-env-{}", reference.replace('/', "-"))
}

/// Whether `path` looks like the view of `owner/name` nixlet installs.
pub fn is_view_of(path: &str, reference: &str) -> bool {
    let suffix = view_suffix(reference);
    path.strip_prefix(&format!("{STORE_DIR}/"))
        .and_then(|name| name.strip_suffix(&suffix))
        .is_some_and(|hash| hash.len() == 32 && hash.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Removes what a test put into the store once the test's node is gone: declare it before
/// `TestNode::run_test` so that it is dropped after the node's teardown (containers hold GC
/// roots until then), also when the test panics. Deletion respects GC roots: a path still alive
/// (another run of the same test using it) stays.
#[derive(Default)]
pub struct StoreCleanup {
    paths: Mutex<Vec<String>>,
    environments: Mutex<Vec<String>>,
}

impl StoreCleanup {
    /// Store paths to delete (outputs, derivations), together in one `nix-store --delete`.
    pub fn paths<I: IntoIterator<Item = String>>(&self, paths: I) {
        self.paths.lock().expect("poisoned").extend(paths);
    }

    /// Environments (`owner/name`) whose installed views are to be deleted.
    pub fn views_of(&self, reference: &str) {
        self.environments
            .lock()
            .expect("poisoned")
            .push(reference.to_owned());
    }
}

impl Drop for StoreCleanup {
    fn drop(&mut self) {
        let environments = std::mem::take(&mut *self.environments.lock().expect("poisoned"));
        for view in environments.iter().flat_map(|r| views_of(r)) {
            if let Err(e) = try_delete(&view) {
                eprintln!("store cleanup: {view} stays: {e}");
            }
        }
        let paths = std::mem::take(&mut *self.paths.lock().expect("poisoned"));
        if delete_paths(&paths).is_ok() {
            return;
        }
        // Something is still alive (rooted by another run): delete what can go, path by path,
        // dependents before their dependencies whatever the order.
        for _ in 0..paths.len().min(4) {
            for path in &paths {
                let _ = try_delete(path);
            }
        }
        let left: Vec<&String> = paths.iter().filter(|p| is_valid(p)).collect();
        if !left.is_empty() {
            eprintln!("store cleanup: still alive, left in the store: {left:?}");
        }
    }
}
