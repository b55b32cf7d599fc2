//! What a host needs before the end-to-end tests can run. On a developer machine a missing piece
//! skips the test with a note; in CI (`CI=true`) it is a failure, so that a broken CI image cannot
//! pass by running nothing.

use std::env;
use std::path::Path;

use nix::unistd::Uid;

/// Host programs the harness runs.
const PROGRAMS: &[&str] = &[
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "nix-build",
    "nix-store",
    "nix-instantiate",
    "umoci",
    "tar",
];

/// The static busybox every image and store path is made from (Debian package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The static bash of the environment fixtures' `bash` package, for activation hooks (Debian
/// package bash-static).
pub const BASH_STATIC: &str = "/bin/bash-static";

/// Everything missing on this host, as human-readable reasons; empty when the suite can run.
pub fn missing() -> Vec<String> {
    let mut why = Vec::new();
    if !Uid::effective().is_root() {
        why.push("not running as root (containerd, runc and mounts need it)".to_owned());
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
    if !Path::new(BASH_STATIC).is_file() {
        why.push(format!("{BASH_STATIC} is missing (install bash-static)"));
    }
    why
}

/// Returns true when the test may run. Otherwise prints `skipping: <why>` and returns false, or
/// panics when `CI=true`.
pub fn ready(test: &str) -> bool {
    ready_with(test, Vec::new())
}

/// Like [`ready`], with `more` reasons of the test's own (a program only it needs, such as an
/// alternative OCI runtime): the test runs only when neither the host nor `more` lacks anything.
pub fn ready_with(test: &str, more: Vec<String>) -> bool {
    let mut why = missing();
    why.extend(more);
    if why.is_empty() {
        return true;
    }
    let why = why.join("; ");
    if env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: end-to-end prerequisites missing in CI: {why}");
    }
    eprintln!("{test}: skipping: {why}");
    false
}

/// The first executable named `program` on PATH.
pub fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
