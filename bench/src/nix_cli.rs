//! The Nix 2.8 command line, for what the bench needs from it: building generated closures,
//! querying closures, emptying the store of them, and `nix-store -r` as the baseline fetcher.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// Runs a command; returns its stdout, or fails quoting its stderr (the e2e harness's runner,
/// re-exported so the bench's scenarios keep calling `nix_cli::run`).
pub use nixlet_e2e::store_paths::run;

/// `nix <args>` with the new CLI enabled whatever nix.conf says.
pub fn nix_command() -> Command {
    let mut cmd = Command::new("nix");
    cmd.args(["--extra-experimental-features", "nix-command"]);
    cmd
}

/// Every path of the closure of `root`, sorted.
pub fn closure(root: &str) -> Result<Vec<String>> {
    let out = run(Command::new("nix-store").args(["--query", "--requisites", root]))?;
    let mut paths: Vec<String> = out.lines().map(str::to_owned).collect();
    paths.sort();
    Ok(paths)
}

/// The paths among `paths` that the Nix database does not hold as valid.
pub fn invalid(paths: &[String]) -> Result<BTreeSet<String>> {
    let mut invalid = BTreeSet::new();
    let out = run(Command::new("nix-store")
        .args(["--check-validity", "--print-invalid"])
        .args(paths))?;
    invalid.extend(out.lines().map(str::to_owned));
    Ok(invalid)
}

/// Removes `paths` from the store and the database (those that are there), with every path
/// that refers to them (the environment views nixlet built on them), so that the next fetch
/// starts cold. Fails if any is still there afterwards (e.g. a GC root holds it).
pub fn delete(paths: &[String]) -> Result<()> {
    let invalid = invalid(paths)?;
    let valid: Vec<&String> = paths.iter().filter(|p| !invalid.contains(*p)).collect();
    if !valid.is_empty() {
        // One call each: Nix deletes a set only when nothing outside it refers to a member.
        // A few thousand store paths stay well below the kernel's argument limit.
        let doomed = run(Command::new("nix-store")
            .args(["--query", "--referrers-closure"])
            .args(&valid))?;
        run(Command::new("nix-store")
            .arg("--delete")
            .args(doomed.lines()))?;
    }
    let left: Vec<&String> = paths
        .iter()
        .filter(|p| Path::new(p).symlink_metadata().is_ok())
        .collect();
    if !left.is_empty() {
        bail!("still in the store after nix-store --delete: {left:?}");
    }
    Ok(())
}

/// `nix-store -r root` substituting from `url` only, trusting `public_key`, with a fresh
/// narinfo disk cache in `cache_home` (Nix would otherwise remember narinfos across runs and
/// skip requests that nixlet's fetcher makes).
pub fn realise(root: &str, url: &str, public_key: &str, cache_home: &Path) -> Result<()> {
    run(Command::new("nix-store")
        .args(["--realise", root])
        .args(["--option", "substituters", url])
        .args(["--option", "trusted-public-keys", public_key])
        .args(["--option", "require-sigs", "true"])
        .env("XDG_CACHE_HOME", cache_home))?;
    Ok(())
}
