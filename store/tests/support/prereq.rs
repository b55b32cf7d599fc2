//! What a host needs for the store's integration tests. On a developer machine a missing piece
//! skips the test with a note; under `CI=true` it is a failure, so that a broken CI machine
//! cannot pass by running nothing.

use std::env;
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

const PROGRAMS: &[&str] = &["nix-build", "nix-store", "nix"];

/// The static busybox the test derivations are built with (Debian package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

pub fn missing() -> Vec<String> {
    let mut why = Vec::new();
    if !Uid::effective().is_root() {
        why.push("not running as root (the tests write /nix/store and the Nix database)".into());
    }
    for program in PROGRAMS {
        if find_in_path(program).is_none() {
            why.push(format!(
                "`{program}` not found on PATH (run scripts/install-deps.sh)"
            ));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        why.push(format!("{BUSYBOX} is missing (install busybox-static)"));
    }
    why
}

/// True when the test may run; otherwise prints `skipping: <why>` and returns false, or panics
/// under `CI=true`.
pub fn ready(test: &str) -> bool {
    let why = missing();
    if why.is_empty() {
        return true;
    }
    let why = why.join("; ");
    if env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: prerequisites missing in CI: {why}");
    }
    eprintln!("{test}: skipping: {why}");
    false
}

pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
