//! `nixlet env fetch`, `nixlet env closure` and `nixlet gc` run as processes against real Nix
//! store paths (built with `nix-build`), a real binary cache (`nix copy`) served on 127.0.0.1,
//! and a node config that keeps GC roots and nixlet's state in a temporary directory.

#[path = "../../store/tests/support/mod.rs"]
mod nix_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix_support::cache_server::CacheServer;
use nix_support::nix_fixture::{self, Cache, Closure, StoreSnapshot};
use nix_support::prereq;

/// A node: config, environment source, GC roots and state, all under one temporary directory.
struct Node {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Node {
    fn new(substituters: &[(&Cache, &CacheServer)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut text = format!(
            "state_dir = \"{state}\"\n\
             gc_roots_dir = \"{gcroots}/nixlet\"\n\
             [mounts]\n\
             trees_dir = \"{trees}\"\n\
             [gc]\n\
             gcroots_dir = \"{gcroots}\"\n\
             max_store_bytes = 0\n\
             grace_secs = 0\n\
             [[sources]]\n\
             kind = \"dir\"\n\
             root = \"{envs}\"\n",
            state = root.join("state").display(),
            gcroots = root.join("gcroots").display(),
            envs = root.join("envs").display(),
            // This node's GC sees only its own roots: the host's trees are not its to sweep.
            trees = root.join("trees").display(),
        );
        for (cache, server) in substituters {
            text.push_str(&format!(
                "[[substituters]]\nurl = \"{}\"\ntrusted_keys = [\"{}\"]\n",
                server.url(),
                cache.public_key
            ));
        }
        let config = root.join("config.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir_all(root.join("gcroots/nixlet")).unwrap();
        Node { dir, config }
    }

    /// Publishes generation 1 of `acme/<name>` holding `store_path`.
    fn publish(&self, name: &str, store_path: &str) -> String {
        let generation = self.dir.path().join("envs/acme").join(name).join("1");
        std::fs::create_dir_all(&generation).unwrap();
        std::fs::write(
            generation.join("manifest.toml"),
            format!("version = 1\n\n[install]\ntop.store-path = \"{store_path}\"\n"),
        )
        .unwrap();
        format!("acme/{name}")
    }

    fn gcroots(&self) -> PathBuf {
        self.dir.path().join("gcroots")
    }

    fn nixlet(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_nixlet"))
            .args(args)
            .env("NIXLET_CONFIG", &self.config)
            .env("NIXLET_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "nixlet {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs nixlet on a pseudo-terminal (util-linux `script`), returning what it drew.
    fn nixlet_on_terminal(&self, args: &[&str]) -> String {
        let command = std::iter::once(env!("CARGO_BIN_EXE_nixlet"))
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let output = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("NIXLET_CONFIG", &self.config)
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        eprintln!("nixlet {args:?} on a terminal: {}\n{text:?}", output.status);
        assert!(output.status.success(), "nixlet {args:?} failed");
        text
    }

    fn nixlet_ok(&self, args: &[&str]) -> Vec<String> {
        let output = self.nixlet(args);
        assert!(output.status.success(), "nixlet {args:?} failed");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Paths in nixlet's install record.
    fn recorded(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.dir.path().join("state/installed-paths.sqlite"))
            .unwrap();
        let mut statement = conn
            .prepare("SELECT path FROM InstalledPaths ORDER BY path")
            .unwrap();
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    }
}

fn nar_size(path: &str) -> u64 {
    nix_fixture::nix(&["nix-store", "-q", "--size", path])
        .trim()
        .parse()
        .unwrap()
}

fn is_valid(path: &str) -> bool {
    Command::new("nix-store")
        .args(["--check-validity", path])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn env_fetch_prints_plain_progress_and_env_closure_lists_sizes() {
    if !prereq::ready("env_fetch_prints_plain_progress_and_env_closure_lists_sizes") {
        return;
    }
    let tag = nix_fixture::unique_tag("clifetch");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "zstd");
    let server = CacheServer::start(cache.root());
    let node = Node::new(&[(&cache, &server)]);
    let reference = node.publish(&tag, &closure.root);
    closure.delete();

    let lines = node.nixlet_ok(&["env", "fetch", &format!("{reference}:1")]);
    let n = closure.paths.len();
    // Not a terminal: plain lines, the plan first and the outcome last.
    assert!(
        lines[0].starts_with(&format!("fetching {n} paths (")),
        "{lines:?}"
    );
    let last = lines.last().unwrap();
    assert!(last.starts_with(&format!("fetched {n} paths (")), "{last}");
    assert!(
        last.ends_with(&format!("; 0 already present; closure of {n} paths")),
        "{last}"
    );
    closure.assert_restored();
    // Every fetched path is recorded as nixlet's, for `nixlet gc`.
    assert_eq!(node.recorded(), closure.paths);

    // Again: nothing to fetch.
    let again = node.nixlet_ok(&["env", "fetch", &reference]);
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0].starts_with("fetched 0 paths ("), "{again:?}");

    let listed = node.nixlet_ok(&["env", "closure", &reference]);
    assert_eq!(listed.len(), n + 1, "{listed:?}");
    for (line, path) in listed.iter().zip(&closure.paths) {
        assert!(line.ends_with(&format!("  {path}")), "{line}");
    }
    let total: u64 = closure.paths.iter().map(|p| nar_size(p)).sum();
    assert!(
        listed[n].ends_with(&format!("  total: {n} paths, {total} bytes")),
        "{}",
        listed[n]
    );

    // On a terminal: a bar on stderr while it runs, then the same outcome line.
    closure.delete();
    let on_terminal = node.nixlet_on_terminal(&["env", "fetch", &reference]);
    assert!(
        on_terminal.contains("looking up the closure") || on_terminal.contains(" paths  "),
        "{on_terminal:?}"
    );
    assert!(
        on_terminal.contains(&format!("fetched {n} paths (")),
        "{on_terminal:?}"
    );
    assert!(
        !on_terminal.contains("fetching "),
        "no plain lines on a terminal"
    );
    closure.assert_restored();

    // A failure is one readable line naming the environment.
    let missing = node.nixlet(&["env", "fetch", "acme/absent"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.starts_with("nixlet: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn gc_deletes_unrooted_nixlet_paths_and_keeps_what_roots_reach() {
    if !prereq::ready("gc_deletes_unrooted_nixlet_paths_and_keeps_what_roots_reach") {
        return;
    }
    let kept_tag = nix_fixture::unique_tag("gckept");
    let partial_tag = nix_fixture::unique_tag("gcpartial");
    let kept = Closure::build(&kept_tag);
    let partial = Closure::build(&partial_tag);
    let kept_cache = Cache::create(&kept.root, &kept_tag, "xz");
    let partial_cache = Cache::create(&partial.root, &partial_tag, "xz");
    let kept_server = CacheServer::start(kept_cache.root());
    let partial_server = CacheServer::start(partial_cache.root());
    let node = Node::new(&[
        (&kept_cache, &kept_server),
        (&partial_cache, &partial_server),
    ]);
    let kept_env = node.publish(&kept_tag, &kept.root);
    let partial_env = node.publish(&partial_tag, &partial.root);
    kept.delete();
    partial.delete();
    node.nixlet_ok(&["env", "fetch", &kept_env]);
    node.nixlet_ok(&["env", "fetch", &partial_env]);

    // A container's root, as the shim makes it, keeps the whole closure.
    std::os::unix::fs::symlink(&kept.root, node.gcroots().join("nixlet/k8s.io.web")).unwrap();
    // An indirect root (`nix-build` without --no-out-link): gcroots/auto/x → result → app.
    let result = node.dir.path().join("result");
    let app = partial.path_named("app");
    let lib = partial.path_named("lib");
    std::os::unix::fs::symlink(&app, &result).unwrap();
    std::fs::create_dir_all(node.gcroots().join("auto")).unwrap();
    std::os::unix::fs::symlink(&result, node.gcroots().join("auto/result-link")).unwrap();
    let doomed: Vec<String> = partial
        .paths
        .iter()
        .filter(|p| **p != app && **p != lib)
        .cloned()
        .collect();
    assert_eq!(doomed.len(), 3, "top, file and link");
    let sizes: std::collections::BTreeMap<&String, u64> =
        doomed.iter().map(|p| (p, nar_size(p))).collect();

    // A dry run lists exactly those, and deletes nothing.
    let before = (
        StoreSnapshot::take(&kept_tag),
        StoreSnapshot::take(&partial_tag),
    );
    let listed = node.nixlet_ok(&["gc", "--dry-run"]);
    let mut would: Vec<String> = listed
        .iter()
        .filter_map(|l| l.strip_prefix("would delete "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    // Referrers come before what they reference: top before file and link.
    assert_eq!(would.first(), Some(&partial.root), "{listed:?}");
    would.sort();
    assert_eq!(would, doomed, "{listed:?}");
    assert!(
        listed.iter().any(|l| l.starts_with("would free 3 paths, ")),
        "{listed:?}"
    );
    assert_eq!(
        (
            StoreSnapshot::take(&kept_tag),
            StoreSnapshot::take(&partial_tag)
        ),
        before
    );

    let report = node.nixlet_ok(&["gc"]);
    let freed: u64 = sizes.values().sum();
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("freed 3 paths, ") && l.contains(&format!("({freed} bytes)"))),
        "{report:?}"
    );
    for path in &doomed {
        assert!(
            report
                .iter()
                .any(|l| l.starts_with(&format!("deleted {path} ("))),
            "{report:?}"
        );
        assert!(!Path::new(path).exists(), "{path} is still on disk");
        assert!(
            !nix_fixture::is_registered(path),
            "{path} is still registered"
        );
        assert!(!is_valid(path));
    }
    // What the roots reach is intact, byte for byte, and still valid for host Nix.
    kept.assert_restored();
    for path in [&app, &lib] {
        nix_fixture::nix(&["nix-store", "--verify-path", path]);
    }
    // No temporary entries or lock files are left, and the record forgot what went.
    let leftovers = StoreSnapshot::take(&partial_tag).entries;
    assert!(
        leftovers
            .iter()
            .all(|e| !e.starts_with(".nixlet-") && !e.ends_with(".lock")),
        "{leftovers:?}"
    );
    let recorded = node.recorded();
    assert!(doomed.iter().all(|p| !recorded.contains(p)), "{recorded:?}");
    assert!(
        kept.paths.iter().all(|p| recorded.contains(p)),
        "{recorded:?}"
    );

    // Once the container's root goes, its closure goes too.
    std::fs::remove_file(node.gcroots().join("nixlet/k8s.io.web")).unwrap();
    let second = node.nixlet_ok(&["gc"]);
    assert!(
        second
            .iter()
            .any(|l| l.starts_with(&format!("freed {} paths, ", kept.paths.len()))),
        "{second:?}"
    );
    for path in &kept.paths {
        assert!(!is_valid(path), "{path}");
    }
    for path in [&app, &lib] {
        assert!(is_valid(path), "{path} is rooted indirectly");
    }
}
