//! Closures of realistic size and compressibility for the cold-materialization scenario, each
//! with two signed binary caches (xz and zstd) made by `nix copy`. Made once and kept under
//! `<target>/nixlet-bench/closures/`, keyed by path count and size, because compressing hundreds
//! of MB with xz takes minutes; later runs only read `meta.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::nix_cli::{self, nix_command, run};
use crate::workdir::Workdir;

/// Bump when closures.nix changes what it generates, so old caches are not reused.
const GENERATION: &str = "v1";

pub const COMPRESSIONS: &[&str] = &["xz", "zstd"];

/// What closures.nix builds on top of the `data` paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The data paths alone.
    Data,
    /// A root holding `bin/busybox` on top (closures.nix `app`): a program to run.
    App,
    /// `VARIANTS` such programs sharing the data, under one root that refers to them all.
    Variants,
}

/// How many environments the `Variants` kind has.
pub const VARIANTS: usize = 5;

#[derive(Debug, Clone, Copy)]
pub struct DataSpec {
    pub count: usize,
    pub bytes_per_path: u64,
    pub kind: Kind,
}

impl DataSpec {
    /// Names the store paths: the same for `app` and plain data, whose paths it shares.
    pub fn tag(&self) -> String {
        format!("{GENERATION}-{}x{}", self.count, self.bytes_per_path)
    }

    fn attr(&self) -> &'static str {
        match self.kind {
            Kind::Data => "data",
            Kind::App => "app",
            Kind::Variants => "variants",
        }
    }

    fn paths(&self) -> usize {
        match self.kind {
            Kind::Data => self.count,
            Kind::App => self.count + 1,
            Kind::Variants => self.count + VARIANTS + 1,
        }
    }
}

/// One cache's size on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheSize {
    /// Sum of the narinfos' `FileSize`: compressed bytes a fetch downloads.
    pub file_bytes: u64,
    /// Sum of `NarSize`: the closure's uncompressed size.
    pub nar_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataClosure {
    pub root: String,
    pub paths: Vec<String>,
    pub public_key: String,
    pub caches: BTreeMap<String, CacheSize>,
    #[serde(skip)]
    dir: PathBuf,
}

impl DataClosure {
    /// Loads the closure for `spec` if it was made before, else builds it and its caches.
    pub fn obtain(work: &Workdir, spec: DataSpec) -> Result<Self> {
        let dir = work
            .subdir("closures")?
            .join(format!("{}-{}", spec.attr(), spec.tag()));
        let meta = dir.join("meta.json");
        if let Ok(text) = fs::read_to_string(&meta) {
            if let Ok(mut closure) = serde_json::from_str::<DataClosure>(&text) {
                closure.dir = dir;
                return Ok(closure);
            }
        }
        eprintln!(
            "nixlet-bench: generating a closure of {} paths x {} bytes and its caches (once)",
            spec.count, spec.bytes_per_path
        );
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let root = work.build(
            spec.attr(),
            &spec.tag(),
            spec.count,
            spec.bytes_per_path,
            None,
        )?;
        let paths = nix_cli::closure(&root)?;
        ensure!(
            paths.len() == spec.paths(),
            "{root} has {} paths in its closure, expected {}",
            paths.len(),
            spec.paths()
        );
        let public_key = sign(&dir, &spec.tag(), &root)?;
        let mut caches = BTreeMap::new();
        for compression in COMPRESSIONS {
            let cache = dir.join(format!("cache-{compression}"));
            let url = format!(
                "file://{}?compression={compression}&parallel-compression=true",
                cache.display()
            );
            run(nix_command().args(["copy", "--to", &url, &root]))?;
            caches.insert(compression.to_string(), cache_size(&cache)?);
        }
        let closure = DataClosure {
            root,
            paths,
            public_key,
            caches,
            dir,
        };
        fs::write(&meta, serde_json::to_string_pretty(&closure)?)?;
        Ok(closure)
    }

    /// Where the closure's own files are kept (an OCI image of it, …).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cache_dir(&self, compression: &str) -> PathBuf {
        self.dir.join(format!("cache-{compression}"))
    }

    pub fn nar_bytes(&self) -> u64 {
        self.caches.values().next().map_or(0, |c| c.nar_bytes)
    }
}

/// Makes a signing key in `dir` and signs the closure of `root` with it; returns the public key.
fn sign(dir: &Path, tag: &str, root: &str) -> Result<String> {
    let secret = dir.join("secret-key");
    let public = dir.join("public-key");
    run(Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .arg(format!("nixlet-bench-{tag}"))
        .arg(&secret)
        .arg(&public))?;
    run(nix_command()
        .args(["store", "sign", "--recursive", "--key-file"])
        .arg(&secret)
        .arg(root))?;
    Ok(fs::read_to_string(&public)?.trim().to_owned())
}

/// Sums `FileSize` and `NarSize` over the narinfos of a cache directory.
fn cache_size(cache: &Path) -> Result<CacheSize> {
    let mut size = CacheSize {
        file_bytes: 0,
        nar_bytes: 0,
    };
    for entry in fs::read_dir(cache)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "narinfo") {
            let text = fs::read_to_string(&path)?;
            for line in text.lines() {
                let field = |prefix: &str| -> Option<u64> {
                    line.strip_prefix(prefix)?.trim().parse().ok()
                };
                size.file_bytes += field("FileSize:").unwrap_or(0);
                size.nar_bytes += field("NarSize:").unwrap_or(0);
            }
        }
    }
    ensure!(size.nar_bytes > 0, "no narinfo in {}", cache.display());
    Ok(size)
}
