//! Where the bench keeps what outlives one run: generated closures and their binary caches
//! (slow to make: xz compression of hundreds of MB), the GC roots of the mount-scaling closures,
//! and the inputs of the Nix expression. All below `<target>/nixlet-bench/`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::nix_cli;

const CLOSURES_NIX: &str = include_str!("closures.nix");

/// The static busybox every generated path is built with (Debian package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, Clone)]
pub struct Workdir {
    root: PathBuf,
}

impl Workdir {
    /// `<target>/nixlet-bench`, with the Nix expression and its busybox input written fresh.
    pub fn prepare() -> Result<Self> {
        let root = nixlet_e2e::shim_build::target_dir()?.join("nixlet-bench");
        let src = root.join("nix-src");
        fs::create_dir_all(src.join("busybox"))?;
        fs::write(src.join("closures.nix"), CLOSURES_NIX)?;
        let busybox = src.join("busybox/busybox");
        // Copy only when it changed, so the imported store path (and every derivation built
        // from it) stays the same from run to run.
        if fs::read(&busybox).ok() != Some(fs::read(BUSYBOX).context("reading /bin/busybox")?) {
            fs::copy(BUSYBOX, &busybox)?;
        }
        Ok(Self { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// `nix-build closures.nix -A <attr>` for `tag` and `count` (and `bytes`), never asking a
    /// binary cache (these paths exist nowhere else). With `out_link` the result stays a GC
    /// root there; returns the output path.
    pub fn build(
        &self,
        attr: &str,
        tag: &str,
        count: usize,
        bytes: u64,
        out_link: Option<&Path>,
    ) -> Result<String> {
        let src = self.root.join("nix-src");
        let mut cmd = nix_cli_command(&src, attr, tag, count, bytes);
        match out_link {
            Some(link) => cmd.arg("--out-link").arg(link),
            None => cmd.arg("--no-out-link"),
        };
        let out = nix_cli::run(&mut cmd)?;
        Ok(out.trim().to_owned())
    }
}

fn nix_cli_command(
    src: &Path,
    attr: &str,
    tag: &str,
    count: usize,
    bytes: u64,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("nix-build");
    cmd.arg(src.join("closures.nix"))
        .arg("--arg")
        .arg("busyboxDir")
        .arg(src.join("busybox"))
        .args(["--argstr", "tag", tag])
        .args(["--arg", "count", &count.to_string()])
        .args(["--arg", "bytes", &bytes.to_string()])
        .args(["-A", attr])
        .args(["--option", "substituters", ""])
        // Thousands of tiny builds: Nix's per-build overhead dominates, run a few at once.
        .args(["--option", "max-jobs", "4"]);
    cmd
}
