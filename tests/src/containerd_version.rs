//! Which containerd the suite runs against: the first `containerd` on PATH, so that
//! `scripts/test.sh` picks a release line by putting its directory first (see
//! `scripts/fetch-containerd.sh`), and `ctr` and `containerd-shim-runc-v2` come from the same
//! release.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdVersion {
    pub major: u32,
    pub minor: u32,
    /// As `containerd --version` prints it (`1.6.20~ds1`, `2.1.9+unknown`, `v2.4.0-beta.0-70-g…`).
    pub text: String,
}

impl ContainerdVersion {
    /// `containerd --version` prints `containerd <module> <version> [<revision>]`.
    pub fn parse(output: &str) -> Result<Self> {
        let text = output
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("unexpected `containerd --version` output {output:?}"))?;
        let mut numbers = text
            .trim_start_matches('v')
            .split(|c: char| !c.is_ascii_digit())
            .map(str::parse::<u32>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(major)), Some(Ok(minor))) => Ok(Self {
                major,
                minor,
                text: text.to_owned(),
            }),
            _ => bail!("no version in `containerd --version` output {output:?}"),
        }
    }

    /// containerd 2.x reads CRI settings from the split plugins of config schema 3 (schema 2
    /// is still migrated, with a warning on every start).
    pub fn uses_schema_3(&self) -> bool {
        self.major >= 2
    }

    /// containerd 2.0 to 2.3 report runtime features only for runc-type runtimes, so `nixlet
    /// node install` declares nixlet's shim there as a runc runtime at its host path.
    pub fn gets_the_runc_form(&self) -> bool {
        self.major == 2 && self.minor < 4
    }
}

impl std::fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The OCI runtime-spec version the `ctr` on PATH writes into bundles (`ociVersion` of its default
/// spec), as (major, minor): 1.0 for containerd 1.6, 1.2 for 1.7.24 and 2.x.
pub fn oci_spec_version() -> Result<(u32, u32)> {
    let output = Command::new("ctr")
        .args(["oci", "spec"])
        .output()
        .context("ctr oci spec")?;
    let spec: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing `ctr oci spec`")?;
    let version = spec["ociVersion"]
        .as_str()
        .context("`ctr oci spec` has no ociVersion")?;
    let mut numbers = version
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => bail!("unreadable ociVersion {version:?}"),
    }
}

/// The version of the `containerd` on PATH, asked once per test process.
pub fn installed() -> Result<ContainerdVersion> {
    static VERSION: OnceLock<Result<ContainerdVersion, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let output = Command::new("containerd")
                .arg("--version")
                .output()
                .map_err(|e| format!("containerd --version: {e}"))?;
            ContainerdVersion::parse(&String::from_utf8_lossy(&output.stdout))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_containerd_prints() {
        for (output, major, minor) in [
            ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", 1, 6),
            ("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1", 1, 7),
            ("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n", 2, 1),
            ("containerd github.com/containerd/containerd/v2 v2.4.0-beta.0-70-g301026e58 301026e\n", 2, 4),
        ] {
            let version = ContainerdVersion::parse(output).unwrap();
            assert_eq!((version.major, version.minor), (major, minor), "{output}");
        }
        assert!(ContainerdVersion::parse("containerd").is_err());
    }
}
