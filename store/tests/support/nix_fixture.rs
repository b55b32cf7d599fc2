//! Real store paths and real binary caches, made by the Nix on this machine.
//!
//! Every test builds its own closure, named with a tag unique to the test and the run, so that
//! tests can run in parallel, delete their own paths, and never touch another test's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nixlet_store::SubstituterConfig;
use sha2::{Digest, Sha256};

/// The Nix expression of the test closure: `top` → `file`, `link` → `app` → `lib`, made of
/// directories, regular and executable files, relative/absolute/dangling symlinks, a store path
/// that is a single file, one that is a symlink, a self-reference, and incompressible bytes.
const CLOSURE_NIX: &str = r#"
{ tag, busyboxDir }:
let
  # A directory holding `busybox`, so that the builder's argv[0] ends in "busybox" and the
  # multi-call binary runs its `sh` applet.
  busyboxStore = builtins.path { path = busyboxDir; name = "nixlet-fetch-busybox"; };
  busybox = "${busyboxStore}/busybox";
  mk = name: script: derivation {
    name = "nixlet-fetch-${tag}-${name}";
    system = builtins.currentSystem;
    builder = busybox;
    args = [ "sh" "-c" ''
      set -e
      ${busybox} mkdir -p $TMPDIR/bin
      ${busybox} --install -s $TMPDIR/bin
      export PATH=$TMPDIR/bin
      ${script}
    '' ];
  };
in rec {
  lib = mk "lib" ''
    mkdir -p $out/lib/sub/deeper $out/share
    echo "library ${tag}" > $out/lib/libdemo.txt
    : > $out/lib/empty
    head -c 200000 /dev/urandom > $out/lib/random.bin
    printf '#!/bin/sh\necho hello\n' > $out/lib/tool
    chmod 755 $out/lib/tool
    ln -s libdemo.txt $out/lib/link
    ln -s /nonexistent/dangling $out/share/dangling
    echo deep > $out/lib/sub/deeper/file
  '';
  app = mk "app" ''
    mkdir -p $out/bin
    printf '#!${lib}/lib/tool\n' > $out/bin/app
    chmod 555 $out/bin/app
    echo "self: $out" > $out/self-ref
    ln -s ${lib}/lib $out/lib
  '';
  file = mk "file" ''echo "a single file that names ${lib}" > $out'';
  link = mk "link" ''ln -s ${app}/bin/app $out'';
  top = mk "top" ''
    mkdir -p $out
    echo ${file} ${link} > $out/deps
  '';
}
"#;

/// A tag for store path names: the test's name, this process and a counter.
pub fn unique_tag(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_lowercase();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{short}-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn nix(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn nix_command(args: &[&str]) -> String {
    let mut full = vec!["nix", "--extra-experimental-features", "nix-command"];
    full.extend_from_slice(args);
    nix(&full)
}

/// A built closure. Dropping it deletes every path it made, derivations included.
pub struct Closure {
    pub tag: String,
    pub root: String,
    /// The whole closure, sorted.
    pub paths: Vec<String>,
    /// `nix-store --dump PATH | sha256sum` of each path, taken right after the build.
    pub dump_hashes: BTreeMap<String, String>,
    /// References of each path, as Nix registered them.
    pub references: BTreeMap<String, BTreeSet<String>>,
    derivers: Vec<String>,
    pub work: tempfile::TempDir,
}

impl Closure {
    pub fn build(tag: &str) -> Closure {
        let work = tempfile::tempdir().unwrap();
        let expr = work.path().join("closure.nix");
        std::fs::write(&expr, CLOSURE_NIX).unwrap();
        let busybox_dir = work.path().join("busybox");
        std::fs::create_dir(&busybox_dir).unwrap();
        std::fs::copy(super::prereq::BUSYBOX, busybox_dir.join("busybox")).unwrap();
        let root = nix(&[
            "nix-build",
            expr.to_str().unwrap(),
            // Build here; never ask cache.nixos.org (there is no network).
            "--option",
            "substituters",
            "",
            "--argstr",
            "tag",
            tag,
            "--arg",
            "busyboxDir",
            busybox_dir.to_str().unwrap(),
            "-A",
            "top",
            "--no-out-link",
        ])
        .trim()
        .to_string();
        let paths: Vec<String> = nix(&["nix-store", "-qR", &root])
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            paths.iter().all(|p| p.contains(tag)),
            "the closure must only hold this test's paths: {paths:?}"
        );
        let mut dump_hashes = BTreeMap::new();
        let mut references = BTreeMap::new();
        let mut derivers = Vec::new();
        for path in &paths {
            dump_hashes.insert(path.clone(), dump_hash(path));
            references.insert(
                path.clone(),
                nix(&["nix-store", "-q", "--references", path])
                    .lines()
                    .map(str::to_string)
                    .collect(),
            );
            let deriver = nix(&["nix-store", "-q", "--deriver", path])
                .trim()
                .to_string();
            if deriver.starts_with("/nix/store/") {
                derivers.push(deriver);
            }
        }
        let mut paths = paths;
        paths.sort();
        Closure {
            tag: tag.to_string(),
            root,
            paths,
            dump_hashes,
            references,
            derivers,
            work,
        }
    }

    /// The root, as the fetcher takes it.
    pub fn roots(&self) -> Vec<nixlet_manifest::StorePath> {
        vec![nixlet_manifest::StorePath::parse(&self.root).unwrap()]
    }

    pub fn path_named(&self, suffix: &str) -> String {
        self.paths
            .iter()
            .find(|p| p.ends_with(&format!("-{suffix}")))
            .unwrap_or_else(|| panic!("no path named {suffix} in {:?}", self.paths))
            .clone()
    }

    /// Removes the closure from the store (its derivations stay until drop).
    pub fn delete(&self) {
        delete_paths(&self.paths);
        for path in &self.paths {
            assert!(
                !Path::new(path).exists(),
                "{path} still exists after deletion"
            );
        }
    }

    /// Asserts every path is valid, passes `nix-store --verify-path`, is byte-identical to the
    /// original, and has its original references.
    pub fn assert_restored(&self) {
        for path in &self.paths {
            nix(&["nix-store", "--verify-path", path]);
            assert_eq!(
                dump_hash(path),
                self.dump_hashes[path],
                "contents of {path}"
            );
            let references: BTreeSet<String> = nix(&["nix-store", "-q", "--references", path])
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(references, self.references[path], "references of {path}");
            assert_canonical(Path::new(path));
        }
    }
}

/// Nix's canonical metadata: mtime 1, files 0444 or 0555, directories 0555, owned by root.
pub fn assert_canonical(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert_eq!(meta.mtime(), 1, "mtime of {}", path.display());
    assert_eq!(meta.uid(), 0, "owner of {}", path.display());
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() {
        assert_eq!(mode, 0o555, "mode of {}", path.display());
        for entry in std::fs::read_dir(path).unwrap() {
            assert_canonical(&entry.unwrap().path());
        }
    } else if meta.is_file() {
        assert!(
            mode == 0o444 || mode == 0o555,
            "mode {mode:o} of {}",
            path.display()
        );
    }
}

impl Drop for Closure {
    fn drop(&mut self) {
        let mut all = self.paths.clone();
        all.extend(self.derivers.iter().cloned());
        let _ = Command::new("nix-store")
            .arg("--delete")
            .args(
                all.iter()
                    .filter(|p| Path::new(p).exists() || Path::new(p).is_symlink()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn delete_paths(paths: &[String]) {
    let present: Vec<&String> = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok() || is_registered(p))
        .collect();
    if present.is_empty() {
        return;
    }
    let mut args = vec!["nix-store", "--delete"];
    args.extend(present.iter().map(|p| p.as_str()));
    nix(&args);
}

pub fn dump_hash(path: &str) -> String {
    let mut child = Command::new("nix-store")
        .args(["--dump", path])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut hasher = Sha256::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = stdout.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    assert!(child.wait().unwrap().success(), "nix-store --dump {path}");
    hex::encode(hasher.finalize())
}

pub fn is_registered(path: &str) -> bool {
    db_rows_like(path).contains(&path.to_string())
}

/// Registered paths whose name contains `pattern`.
pub fn db_rows_like(pattern: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open_with_flags(
        "/nix/var/nix/db/db.sqlite",
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let mut statement = conn
        .prepare("SELECT path FROM ValidPaths WHERE instr(path, ?1) > 0")
        .unwrap();
    let rows = statement
        .query_map([pattern], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// Entries directly in /nix/store whose name contains `pattern` (paths, temporary entries,
/// lock files).
pub fn store_entries_like(pattern: &str) -> BTreeSet<String> {
    std::fs::read_dir("/nix/store")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(pattern))
        .collect()
}

/// What the store and the database hold for `tag`, to compare before and after a failure.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreSnapshot {
    pub entries: BTreeSet<String>,
    pub rows: Vec<String>,
}

impl StoreSnapshot {
    pub fn take(tag: &str) -> StoreSnapshot {
        let mut rows = db_rows_like(tag);
        rows.sort();
        StoreSnapshot {
            entries: store_entries_like(tag),
            rows,
        }
    }

    /// No temporary entry or lock file of a fetch is left in the store for `tag`.
    pub fn assert_no_temporaries(tag: &str) {
        let entries = StoreSnapshot::take(tag).entries;
        assert!(
            entries
                .iter()
                .all(|e| !e.starts_with(".nixlet-") && !e.ends_with(".lock")),
            "{entries:?}"
        );
    }
}

/// The Nix database keeps a signature by `key_name` for `path`, so host Nix can verify its
/// provenance.
pub fn assert_signed_by(path: &str, key_name: &str) {
    let sigs = nix(&[
        "nix",
        "--extra-experimental-features",
        "nix-command",
        "path-info",
        "--sigs",
        path,
    ]);
    assert!(sigs.contains(key_name), "signatures of {path}: {sigs}");
}

/// A binary cache directory written by `nix copy`, with its signing key.
pub struct Cache {
    pub dir: tempfile::TempDir,
    pub key_name: String,
    pub public_key: String,
    pub secret_key_file: PathBuf,
}

impl Cache {
    /// Signs the closure of `root` locally with a fresh key (`nix store sign`) and copies it to
    /// a `file://` cache with `compression`.
    pub fn create(root: &str, tag: &str, compression: &str) -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let key_name = format!("nixlet-fetch-{tag}-1");
        let secret_key_file = dir.path().join("secret-key");
        let public_key_file = dir.path().join("public-key");
        nix(&[
            "nix-store",
            "--generate-binary-cache-key",
            &key_name,
            secret_key_file.to_str().unwrap(),
            public_key_file.to_str().unwrap(),
        ]);
        nix_command(&[
            "store",
            "sign",
            "--key-file",
            secret_key_file.to_str().unwrap(),
            "--recursive",
            root,
        ]);
        let cache_dir = dir.path().join("cache");
        nix_command(&[
            "copy",
            "--to",
            &format!("file://{}?compression={compression}", cache_dir.display()),
            root,
        ]);
        let public_key = std::fs::read_to_string(public_key_file)
            .unwrap()
            .trim()
            .to_string();
        Cache {
            dir,
            key_name,
            public_key,
            secret_key_file,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn narinfo_file(&self, store_path: &str) -> PathBuf {
        let hash = &store_path["/nix/store/".len().."/nix/store/".len() + 32];
        self.root().join(format!("{hash}.narinfo"))
    }

    pub fn narinfo(&self, store_path: &str) -> String {
        std::fs::read_to_string(self.narinfo_file(store_path)).unwrap()
    }

    /// `(name, value)` of a narinfo field.
    pub fn field(&self, store_path: &str, name: &str) -> Option<String> {
        self.narinfo(store_path)
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_string))
    }

    /// Rewrites every narinfo through `edit` (line by line; `None` drops the line).
    pub fn edit_narinfos(&self, mut edit: impl FnMut(&str) -> Option<String>) {
        for entry in std::fs::read_dir(self.root()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "narinfo") {
                let text = std::fs::read_to_string(&path).unwrap();
                let edited: Vec<String> = text.lines().filter_map(&mut edit).collect();
                std::fs::write(&path, edited.join("\n") + "\n").unwrap();
            }
        }
    }

    pub fn nar_file(&self, store_path: &str) -> PathBuf {
        self.root().join(self.field(store_path, "URL").unwrap())
    }

    pub fn substituter(&self, url: &str) -> SubstituterConfig {
        SubstituterConfig {
            url: url.to_string(),
            trusted_keys: vec![self.public_key.clone()],
            ..SubstituterConfig::default()
        }
    }
}

/// Fetch options for tests: quick retries, short timeouts.
pub fn test_options() -> nixlet_store::FetchOptions {
    nixlet_store::FetchOptions {
        attempts: 3,
        retry_backoff: std::time::Duration::from_millis(20),
        connect_timeout: std::time::Duration::from_secs(5),
        request_timeout: std::time::Duration::from_secs(10),
        read_timeout: std::time::Duration::from_secs(10),
        ..nixlet_store::FetchOptions::default()
    }
}
