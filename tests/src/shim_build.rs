//! Builds `containerd-shim-nixlet-v2` from this workspace, so that `cargo test` alone runs the
//! current shim. Done once per test process; every test node then copies the binary into its own
//! PATH directory, so a rebuild by someone else mid-run does not swap it under containerd.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

pub const SHIM_BINARY: &str = "containerd-shim-nixlet-v2";
const SHIM_PACKAGE: &str = "nixlet-shim";

/// The workspace root: this crate lives in `<root>/tests`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits inside the workspace")
        .to_path_buf()
}

/// The cargo that runs this test (cargo sets `CARGO` for test processes), else the one on PATH.
fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace's target directory as cargo resolves it (honours CARGO_TARGET_DIR and config);
/// asked once per process.
pub fn target_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| query_target_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn query_target_dir() -> Result<PathBuf> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = meta["target_directory"]
        .as_str()
        .ok_or_else(|| anyhow!("cargo metadata has no target_directory"))?;
    Ok(PathBuf::from(dir))
}

/// Names a prebuilt shim binary to test instead of building one (e.g. a release build).
pub const SHIM_OVERRIDE_ENV: &str = "NIXLET_E2E_SHIM";

/// Path of the shim binary to test: `$NIXLET_E2E_SHIM` if set, else freshly built (at most once
/// per process).
pub fn shim_binary() -> Result<PathBuf> {
    if let Some(prebuilt) = env::var_os(SHIM_OVERRIDE_ENV) {
        let prebuilt = PathBuf::from(prebuilt);
        if !prebuilt.is_file() {
            bail!("{SHIM_OVERRIDE_ENV}={} is not a file", prebuilt.display());
        }
        return Ok(prebuilt);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build() -> Result<PathBuf> {
    build_binary(SHIM_PACKAGE, SHIM_BINARY)
}

pub const CLI_BINARY: &str = "nixlet";
const CLI_PACKAGE: &str = "nixlet-cli";

/// Names a prebuilt `nixlet` CLI to test instead of building one.
pub const CLI_OVERRIDE_ENV: &str = "NIXLET_E2E_CLI";

/// Path of the `nixlet` operator CLI to test: `$NIXLET_E2E_CLI` if set, else freshly built (at
/// most once per process). `nixlet node install` copies the shim from the CLI's own directory,
/// so tests stage both into one directory of their own first.
pub fn cli_binary() -> Result<PathBuf> {
    if let Some(prebuilt) = env::var_os(CLI_OVERRIDE_ENV) {
        let prebuilt = PathBuf::from(prebuilt);
        if !prebuilt.is_file() {
            bail!("{CLI_OVERRIDE_ENV}={} is not a file", prebuilt.display());
        }
        return Ok(prebuilt);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binary(CLI_PACKAGE, CLI_BINARY).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_binary(package: &str, bin: &str) -> Result<PathBuf> {
    eprintln!("nixlet-e2e: building {package}");
    let status = Command::new(cargo())
        .args(["build", "-p", package, "--bin", bin])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p {package} failed ({status})");
    }
    let binary = target_dir()?.join("debug").join(bin);
    if !binary.is_file() {
        bail!("{} was not produced by the build", binary.display());
    }
    Ok(binary)
}
