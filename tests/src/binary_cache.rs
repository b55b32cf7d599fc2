//! Closures that exist only in a binary cache: built here with `fetch_fixture.nix` under a tag
//! unique to the run, signed (`nix store sign`), copied into a `file://` cache directory by real
//! Nix (`nix copy`), then deleted from the host store, so that nixlet has to fetch them.
//! [`crate::http_server::HttpServer`] serves the cache directory on 127.0.0.1.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context, Result};

use crate::prereq::BUSYBOX;
use crate::store_paths::{delete_paths, dump_hash, is_valid, nix_command, run};

const FETCH_FIXTURE_NIX: &str = include_str!("fetch_fixture.nix");

/// A tag no other run or test uses: `<prefix>-<pid>-<counter>-<nanos>`.
pub fn unique_tag(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The three paths of one tag of `fetch_fixture.nix`, with what identifies their contents.
#[derive(Debug, Clone)]
pub struct RemoteClosure {
    pub tag: String,
    pub busybox: String,
    pub data: String,
    pub tool: String,
    /// `nix-store --dump` hash of each path, taken right after the build.
    pub dump_hashes: BTreeMap<String, String>,
    pub derivations: Vec<String>,
    out_link: PathBuf,
}

impl RemoteClosure {
    /// Builds the closure of `tag`, rooted by an out-link below `dir` until
    /// [`Self::remove_from_host`].
    pub fn build(dir: &Path, tag: &str) -> Result<Self> {
        let src = dir.join("busybox-src");
        fs::create_dir_all(&src)?;
        fs::copy(BUSYBOX, src.join("busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
        let nix_file = dir.join("fetch_fixture.nix");
        fs::write(&nix_file, FETCH_FIXTURE_NIX)?;
        let out_link = dir.join(format!("result-{tag}"));
        let out = run(Command::new("nix-build")
            .arg(&nix_file)
            .arg("--arg")
            .arg("busyboxSrc")
            .arg(&src)
            .args(["--argstr", "tag", tag])
            .args(["--option", "substituters", ""])
            .args(["-A", "busybox", "-A", "data", "-A", "tool", "--out-link"])
            .arg(&out_link))?;
        let paths: Vec<&str> = out.lines().collect();
        ensure!(paths.len() == 3, "nix-build printed {out:?}");
        let mut closure = Self {
            tag: tag.to_owned(),
            busybox: paths[0].to_owned(),
            data: paths[1].to_owned(),
            tool: paths[2].to_owned(),
            dump_hashes: BTreeMap::new(),
            derivations: Vec::new(),
            out_link,
        };
        for path in closure.paths() {
            closure.dump_hashes.insert(path.clone(), dump_hash(&path)?);
            let deriver = run(Command::new("nix-store").args(["--query", "--deriver", &path]))?;
            if deriver.trim().starts_with("/nix/store/") {
                closure.derivations.push(deriver.trim().to_owned());
            }
        }
        Ok(closure)
    }

    /// Dependencies first: busybox, data, tool.
    pub fn paths(&self) -> Vec<String> {
        vec![self.busybox.clone(), self.data.clone(), self.tool.clone()]
    }

    /// What `fetched-tool` (on PATH in the environment) prints.
    pub fn expected_output(&self) -> String {
        format!(
            "fetched data ({}), read with {}/bin/busybox\n",
            self.tag, self.busybox
        )
    }

    /// Drops the out-link and deletes the closure from the host store.
    pub fn remove_from_host(&self) -> Result<()> {
        for entry in fs::read_dir(self.out_link.parent().context("out-link has no parent")?)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let base = self
                .out_link
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            if name == base || name.starts_with(&format!("{base}-")) {
                fs::remove_file(&path)?;
            }
        }
        delete_paths(&self.paths())?;
        for path in self.paths() {
            ensure!(
                !is_valid(&path) && !Path::new(&path).exists(),
                "{path} is still on the host after nix-store --delete"
            );
        }
        Ok(())
    }

    /// Everything of this closure a test should delete at its end: outputs and derivations.
    pub fn everything(&self) -> Vec<String> {
        let mut all = self.paths();
        all.extend(self.derivations.iter().cloned());
        all
    }
}

/// A binary cache signing key made by `nix-store --generate-binary-cache-key`.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub name: String,
    /// `name:base64`, as `trusted_keys` lists it.
    pub public: String,
    pub secret_file: PathBuf,
}

impl SigningKey {
    pub fn generate(dir: &Path, name: &str) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let secret_file = dir.join(format!("{name}.secret"));
        let public_file = dir.join(format!("{name}.public"));
        run(Command::new("nix-store")
            .args(["--generate-binary-cache-key", name])
            .arg(&secret_file)
            .arg(&public_file))?;
        Ok(Self {
            name: name.to_owned(),
            public: fs::read_to_string(&public_file)?.trim().to_owned(),
            secret_file,
        })
    }
}

/// A `file://` binary cache directory written by `nix copy`.
pub struct BinaryCache {
    dir: PathBuf,
}

impl BinaryCache {
    pub fn new(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// Signs the closure with `key` in the host store and copies it here with `compression`
    /// (`xz`, `zstd`, `bzip2`, `gzip`, `none`).
    pub fn add(&self, closure: &RemoteClosure, key: &SigningKey, compression: &str) -> Result<()> {
        let secret = key.secret_file.to_str().context("non-UTF-8 key path")?;
        nix_command(&[
            "store",
            "sign",
            "--key-file",
            secret,
            "--recursive",
            &closure.tool,
        ])?;
        let to = format!("file://{}?compression={compression}", self.dir.display());
        nix_command(&["copy", "--to", &to, &closure.tool])?;
        Ok(())
    }

    fn narinfo(&self, store_path: &str) -> Result<String> {
        let hash = store_path
            .strip_prefix("/nix/store/")
            .and_then(|name| name.get(..32))
            .with_context(|| format!("{store_path:?} is not a store path"))?;
        let file = self.dir.join(format!("{hash}.narinfo"));
        fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))
    }

    /// A field of a path's narinfo (`URL`, `Sig`, …).
    pub fn field(&self, store_path: &str, name: &str) -> Result<String> {
        self.narinfo(store_path)?
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            .with_context(|| format!("the narinfo of {store_path} has no {name}"))
    }

    /// The request path of a store path's NAR on the cache server (`/nar/….nar.xz`).
    pub fn nar_request_path(&self, store_path: &str) -> Result<String> {
        Ok(format!("/{}", self.field(store_path, "URL")?))
    }

    /// Flips one byte in the middle of a path's NAR file (use with `compression = none`, so that
    /// the NAR still parses and only its hash is wrong).
    pub fn flip_nar_byte(&self, store_path: &str) -> Result<()> {
        let file = self.dir.join(self.field(store_path, "URL")?);
        let mut bytes = fs::read(&file)?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&file, bytes)?;
        Ok(())
    }
}

/// A `[[substituters]]` entry of the node config.
pub fn substituter_toml(url: &str, trusted_keys: &[&str]) -> String {
    let keys: Vec<String> = trusted_keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "[[substituters]]\nurl = \"{url}\"\ntrusted_keys = [{}]\n",
        keys.join(", ")
    )
}
