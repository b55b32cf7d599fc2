//! The nixlet shim the bench's containerd runs: built with the bench's own profile, so that a
//! `--release` bench measures a release shim (the e2e harness alone would build a debug one).

use std::env;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nixlet_e2e::shim_build::{target_dir, workspace_root, SHIM_BINARY, SHIM_OVERRIDE_ENV};

/// Builds the shim (release when this binary is optimized) and points the e2e harness at it.
/// A shim named by `NIXLET_E2E_SHIM` already is used as it is.
pub fn select() -> Result<String> {
    if let Some(chosen) = env::var_os(SHIM_OVERRIDE_ENV) {
        return Ok(format!(
            "{} (from {SHIM_OVERRIDE_ENV})",
            chosen.to_string_lossy()
        ));
    }
    if cfg!(debug_assertions) {
        // The harness builds a debug shim itself; the numbers are then only a smoke test.
        return Ok("debug build".to_owned());
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("nixlet-bench: building the release shim");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "nixlet-shim",
            "--bin",
            SHIM_BINARY,
        ])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p nixlet-shim failed ({status})");
    }
    let binary = target_dir()?.join("release").join(SHIM_BINARY);
    if !binary.is_file() {
        bail!("{} was not produced by the build", binary.display());
    }
    env::set_var(SHIM_OVERRIDE_ENV, &binary);
    Ok("release build".to_owned())
}
