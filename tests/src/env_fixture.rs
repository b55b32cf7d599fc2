//! Store paths for the environment tests (`env_fixture.nix`): two packages whose files collide,
//! busybox applets, a static bash for activation hooks, a package of docs and certificates, and a
//! library that propagates two packages.
//!
//! Built with `nix-build` into a directory of the test node's scratch dir; the out-links there are
//! GC roots while the node lives ([`EnvPackages::unroot`] drops them early, for GC tests).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

pub use crate::prereq::BASH_STATIC;
use crate::prereq::BUSYBOX;
use crate::store_paths::run;

const ENV_FIXTURE_NIX: &str = include_str!("env_fixture.nix");

/// What `bin/tool` of `toolA` / `toolB` prints.
pub fn tool_output(which: &str) -> String {
    format!("tool from {which}\n")
}

/// The outputs of one tag of `env_fixture.nix`.
#[derive(Debug, Clone)]
pub struct EnvPackages {
    pub tag: String,
    pub busybox: String,
    pub coreutils: String,
    pub bash: String,
    pub docs: String,
    pub tool_a: String,
    pub tool_b: String,
    /// Propagates `build_dep` as a build input and `user_dep` as a user-env package.
    pub library: String,
    pub build_dep: String,
    pub user_dep: String,
    gcroots: PathBuf,
}

const ATTRS: [&str; 9] = [
    "busybox",
    "coreutils",
    "bash",
    "docs",
    "toolA",
    "toolB",
    "library",
    "buildDep",
    "userDep",
];

impl EnvPackages {
    /// Builds (or finds) the packages of `tag`, with out-links (GC roots) below `dir`.
    pub fn build(dir: &Path, tag: &str) -> Result<Self> {
        ensure!(
            Path::new(BASH_STATIC).is_file(),
            "{BASH_STATIC} is missing (install bash-static: scripts/install-deps.sh)"
        );
        let src = dir.join("src");
        for (name, from) in [("busybox", BUSYBOX), ("bash", BASH_STATIC)] {
            let sub = src.join(name);
            fs::create_dir_all(&sub)?;
            fs::copy(from, sub.join(name)).with_context(|| format!("copying {from}"))?;
        }
        let nix_file = dir.join("env_fixture.nix");
        fs::write(&nix_file, ENV_FIXTURE_NIX)?;
        let gcroots = dir.join("gcroots");
        fs::create_dir_all(&gcroots)?;

        let mut cmd = Command::new("nix-build");
        cmd.arg(&nix_file)
            .arg("--arg")
            .arg("busyboxSrc")
            .arg(src.join("busybox"))
            .arg("--arg")
            .arg("bashSrc")
            .arg(src.join("bash"))
            .args(["--argstr", "tag", tag])
            // No binary cache: these paths exist nowhere else.
            .args(["--option", "substituters", ""])
            .arg("--out-link")
            .arg(gcroots.join(tag));
        for attr in ATTRS {
            cmd.args(["-A", attr]);
        }
        let out = run(&mut cmd)?;
        let paths: Vec<String> = out.lines().map(str::to_owned).collect();
        ensure!(
            paths.len() == ATTRS.len() && paths.iter().all(|p| p.starts_with("/nix/store/")),
            "nix-build printed {out:?} for {ATTRS:?}"
        );
        Ok(Self {
            tag: tag.to_owned(),
            busybox: paths[0].clone(),
            coreutils: paths[1].clone(),
            bash: paths[2].clone(),
            docs: paths[3].clone(),
            tool_a: paths[4].clone(),
            tool_b: paths[5].clone(),
            library: paths[6].clone(),
            build_dep: paths[7].clone(),
            user_dep: paths[8].clone(),
            gcroots,
        })
    }

    /// Absolute path of busybox, usable in any container that mounts this tag's busybox.
    pub fn busybox_bin(&self) -> String {
        format!("{}/bin/busybox", self.busybox)
    }

    /// Every output of the tag.
    pub fn outputs(&self) -> Vec<String> {
        vec![
            self.busybox.clone(),
            self.coreutils.clone(),
            self.bash.clone(),
            self.docs.clone(),
            self.tool_a.clone(),
            self.tool_b.clone(),
            self.library.clone(),
            self.build_dep.clone(),
            self.user_dep.clone(),
        ]
    }

    /// The derivations that built the outputs (for a test that deletes what it made).
    pub fn derivations(&self) -> Result<Vec<String>> {
        self.outputs()
            .iter()
            .map(|p| {
                Ok(
                    run(Command::new("nix-store").args(["--query", "--deriver", p]))?
                        .trim()
                        .to_owned(),
                )
            })
            .filter(|d| !matches!(d, Ok(d) if !d.starts_with("/nix/store/")))
            .collect()
    }

    /// Removes this tag's out-links: from now on nothing but what the test does keeps the
    /// outputs from being collected.
    pub fn unroot(&self) -> Result<()> {
        for entry in fs::read_dir(&self.gcroots)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&self.tag) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}
