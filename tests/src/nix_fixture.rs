//! Real Nix store paths for the tests, built with `nix-build` from `fixture.nix` (no nixpkgs):
//! `nixlet-test-hello` (a `bin/hello` script) refers to `nixlet-test-data` (a message file) and
//! to `nixlet-test-busybox` (its interpreter), so its closure is exactly those three paths.
//!
//! Builds are cached by Nix, so the second run only evaluates. Out-links under the node's scratch
//! directory are GC roots while the test runs and go stale (collectable) once it is removed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::prereq::BUSYBOX;

const FIXTURE_NIX: &str = include_str!("fixture.nix");

/// What `hello` prints with tag `tag`.
pub fn expected_hello_output(tag: &str) -> String {
    format!("nixlet test data ({tag})\nhello from nixlet-test-hello\n")
}

/// The three store paths of one tag.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub tag: String,
    pub busybox: String,
    pub data: String,
    pub hello: String,
}

impl Fixture {
    /// The closure of `hello`: every path a container needs mounted to run it.
    pub fn hello_closure(&self) -> BTreeSet<String> {
        [&self.hello, &self.data, &self.busybox]
            .into_iter()
            .cloned()
            .collect()
    }

    /// Absolute path of the busybox binary inside the store, usable in an empty image.
    pub fn busybox_bin(&self) -> String {
        format!("{}/bin/busybox", self.busybox)
    }

    /// A container on the empty image that sleeps for an hour with the fixture's busybox: one
    /// that runs while a test execs into it, kills shims or restarts containerd.
    pub fn sleeper(&self, name: &str) -> crate::cri::ContainerSpec {
        crate::cri::ContainerSpec::new(name, crate::images::EMPTY_IMAGE).command(&[
            &self.busybox_bin(),
            "sleep",
            "3600",
        ])
    }
}

/// Where the fixture's inputs and GC-root links live (a directory inside a test's scratch dir).
pub struct FixtureDir {
    dir: PathBuf,
}

impl FixtureDir {
    /// Writes `fixture.nix` and a directory holding a copy of the host's static busybox.
    pub fn prepare(dir: &Path) -> Result<Self> {
        let src = dir.join("busybox-src");
        fs::create_dir_all(&src)?;
        fs::copy(BUSYBOX, src.join("busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
        fs::write(dir.join("fixture.nix"), FIXTURE_NIX)?;
        fs::create_dir_all(dir.join("gcroots"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Builds (or finds in the store) the paths for `tag` and checks their references.
    pub fn build(&self, tag: &str) -> Result<Fixture> {
        let fixture = Fixture {
            tag: tag.to_owned(),
            busybox: self.nix_build(tag, "busybox")?,
            data: self.nix_build(tag, "data")?,
            hello: self.nix_build(tag, "hello")?,
        };
        let refs = references(&fixture.hello)?;
        let expected: BTreeSet<String> = [fixture.data.clone(), fixture.busybox.clone()].into();
        ensure!(
            refs == expected,
            "fixture: {} refers to {refs:?}, expected {expected:?}",
            fixture.hello
        );
        Ok(fixture)
    }

    /// The store path `hello` would have for `tag`, computed without building it: a well-formed
    /// path that is guaranteed absent from this node's store as long as nobody builds that tag.
    pub fn unbuilt_hello(&self, tag: &str) -> Result<String> {
        let expr = format!(
            "(import {} {{ busyboxSrc = {}; tag = \"{tag}\"; }}).hello.outPath",
            self.dir.join("fixture.nix").display(),
            self.dir.join("busybox-src").display(),
        );
        let out = run(Command::new("nix-instantiate").args(["--eval", "--json", "-E", &expr]))?;
        let path: String = serde_json::from_str(out.trim())?;
        ensure!(
            !Path::new(&path).exists(),
            "{path} exists; pick another tag than {tag:?}"
        );
        Ok(path)
    }

    fn nix_build(&self, tag: &str, attr: &str) -> Result<String> {
        let link = self.dir.join("gcroots").join(format!("{tag}-{attr}"));
        let out = run(Command::new("nix-build")
            .arg(self.dir.join("fixture.nix"))
            .args(["--arg", "busyboxSrc"])
            .arg(self.dir.join("busybox-src"))
            .args(["--argstr", "tag", tag, "-A", attr, "--out-link"])
            .arg(&link)
            // No binary cache: these paths exist nowhere else, and an unreachable
            // cache.nixos.org costs seconds per build on an offline machine.
            .args(["--option", "substituters", ""]))?;
        let path = out.trim().to_owned();
        ensure!(
            path.starts_with("/nix/store/"),
            "nix-build -A {attr} printed {path:?}"
        );
        Ok(path)
    }
}

/// Direct references of a store path, from the Nix database.
pub fn references(path: &str) -> Result<BTreeSet<String>> {
    let out = run(Command::new("nix-store").args(["--query", "--references", path]))?;
    Ok(out
        .lines()
        .map(str::to_owned)
        .filter(|p| p != path)
        .collect())
}

/// Runs a command and returns its stdout, failing with its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}
