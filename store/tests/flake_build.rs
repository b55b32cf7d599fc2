//! The last resort of a closure fetch: a flake package whose outputs no cache has is built with
//! real `nix build` from a local flake locked by `nix flake metadata`, when (and only when) a
//! `nix-cli` substituter has `build_flakes = true`; a lock naming other outputs than the flake
//! builds is refused with the package, the flake and both paths, and nothing built is used.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use nixlet_manifest::{FlakeInstallable, StorePath};
use nixlet_store::install_record::InstallRecord;
use nixlet_store::{FetchOptions, Fetcher, FlakeRecipe, SubstituterBackend, SubstituterConfig};
use support::nix_fixture::{self, nix, test_options};
use support::prereq;
use support::processes::processes_mentioning;

const KEY: &str = "flake-test-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// A local flake with one two-output package built by busybox (no nixpkgs), locked as Flox
/// locks it; dropping it deletes what Nix put into the store for it.
struct LocalFlake {
    tag: String,
    dir: tempfile::TempDir,
    /// `locked.url` of `nix flake metadata`: `path:/…?lastModified=…&narHash=…`.
    locked_url: String,
    attr_path: String,
    /// The outputs as Nix evaluates them, before anything is built.
    outputs: BTreeMap<String, StorePath>,
    /// The flake's source as copied into the store, and the derivation.
    extra_paths: Vec<String>,
}

impl LocalFlake {
    /// A flake whose package writes `built <tag>` to `out`.
    fn create(tag: &str) -> LocalFlake {
        LocalFlake::with_script(tag, &format!("echo built {tag} > $out; echo doc > $doc"))
    }

    /// A flake whose package's builder runs `script`.
    fn with_script(tag: &str, script: &str) -> LocalFlake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bb")).unwrap();
        std::fs::copy(prereq::BUSYBOX, dir.path().join("bb/busybox")).unwrap();
        let system = nix(&[
            "nix",
            "--extra-experimental-features",
            "nix-command",
            "eval",
            "--impure",
            "--raw",
            "--expr",
            "builtins.currentSystem",
        ]);
        // busybox picks its applet from argv[0]'s base name: run it as `<dir>/busybox`.
        std::fs::write(
            dir.path().join("flake.nix"),
            format!(
                r#"{{
  outputs = {{ self }}: {{
    packages.{system}.default = derivation {{
      name = "nixlet-flake-{tag}";
      system = "{system}";
      outputs = [ "out" "doc" ];
      builder = "${{self}}/bb/busybox";
      args = [ "sh" "-c" "{script}" ];
    }};
  }};
}}
"#
            ),
        )
        .unwrap();
        let metadata: serde_json::Value = serde_json::from_str(&flakes(&[
            "flake",
            "metadata",
            "--json",
            &format!("path:{}", dir.path().display()),
        ]))
        .unwrap();
        let locked_url = metadata["url"].as_str().unwrap().to_string();
        let source = metadata["path"].as_str().unwrap().to_string();
        let attr_path = format!("packages.{system}.default");
        let eval = |attr: &str| -> StorePath {
            let text = flakes(&["eval", "--raw", &format!("{locked_url}#{attr}")]);
            StorePath::parse(text.trim()).unwrap()
        };
        let outputs = BTreeMap::from([
            ("out".to_string(), eval(&format!("{attr_path}.outPath"))),
            ("doc".to_string(), eval(&format!("{attr_path}.doc.outPath"))),
        ]);
        let drv = eval(&format!("{attr_path}.drvPath")).to_string();
        for path in outputs.values() {
            assert!(
                !path.to_path_buf().exists(),
                "{path} exists before the test"
            );
        }
        LocalFlake {
            tag: tag.to_string(),
            dir,
            locked_url,
            attr_path,
            outputs,
            extra_paths: vec![drv, source],
        }
    }

    /// The recipe of install id `hello` in `test/flake:1`, for `outputs`.
    fn recipe(&self, outputs: BTreeMap<String, StorePath>) -> FlakeRecipe {
        FlakeRecipe {
            environment: "test/flake:1".into(),
            install_id: "hello".into(),
            flake: FlakeInstallable {
                locked_url: self.locked_url.clone(),
                attr_path: self.attr_path.clone(),
            },
            outputs,
        }
    }

    /// The outputs, sorted.
    fn roots(&self) -> Vec<StorePath> {
        let mut roots: Vec<StorePath> = self.outputs.values().cloned().collect();
        roots.sort();
        roots
    }
}

impl Drop for LocalFlake {
    fn drop(&mut self) {
        let mut paths: Vec<String> = self.outputs.values().map(|p| p.to_string()).collect();
        // Whatever else the test's builds made (a wrong output), found by the unique tag.
        paths.extend(
            nix_fixture::db_rows_like(&self.tag)
                .into_iter()
                .filter(|p| !p.ends_with(".drv")),
        );
        paths.extend(self.extra_paths.iter().cloned());
        paths.sort();
        paths.dedup();
        nix_fixture::delete_paths(&paths);
        // A killed build leaves Nix's per-output lock files, as any crash of Nix does.
        for name in nix_fixture::store_entries_like(&self.tag) {
            if name.ends_with(".lock") {
                let _ = std::fs::remove_file(Path::new("/nix/store").join(name));
            }
        }
        let left = nix_fixture::store_entries_like(&self.tag);
        assert!(
            left.is_empty() || std::thread::panicking(),
            "left in the store: {left:?}"
        );
        let _ = &self.dir;
    }
}

fn flakes(args: &[&str]) -> String {
    let mut full = vec!["nix", "--extra-experimental-features", "nix-command flakes"];
    full.extend_from_slice(args);
    nix(&full)
}

/// A `file://` cache with nothing in it: what a node's nix-cli substituter may well be for a
/// package built from a flake nobody pushed.
fn empty_cache(dir: &Path) -> String {
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join("nix-cache-info"),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
    )
    .unwrap();
    format!("file://{}", cache.display())
}

fn nix_cli(url: &str, build_flakes: bool) -> SubstituterConfig {
    nix_cli_with_timeout(url, build_flakes, 120)
}

fn nix_cli_with_timeout(url: &str, build_flakes: bool, timeout_secs: u64) -> SubstituterConfig {
    SubstituterConfig {
        url: url.to_string(),
        trusted_keys: vec![KEY.to_string()],
        backend: SubstituterBackend::NixCli,
        timeout_secs: Some(timeout_secs),
        build_flakes,
        ..SubstituterConfig::default()
    }
}

fn is_valid(path: &StorePath) -> bool {
    nix_fixture::is_registered(&path.to_string())
}

#[tokio::test]
async fn a_flake_package_no_cache_has_is_built_as_locked_only_when_enabled() {
    if !prereq::ready("a_flake_package_no_cache_has_is_built_as_locked_only_when_enabled") {
        return;
    }
    let flake = LocalFlake::create(&nix_fixture::unique_tag("flakebuild"));
    let state = tempfile::tempdir().unwrap();
    let cache = empty_cache(state.path());
    let record_file = state.path().join("installed-paths.sqlite");
    let options = FetchOptions {
        install_record: Some(record_file.clone()),
        ..test_options()
    };
    let recipes = [flake.recipe(flake.outputs.clone())];

    // Without build_flakes the substituter only substitutes: the caches' failure is the error.
    let refused = Fetcher::new(vec![nix_cli(&cache, false)], options.clone())
        .unwrap()
        .fetch_closure_with_progress(&flake.roots(), &recipes, Arc::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("the nix cli fallback failed too") && !refused.contains("nix build"),
        "{refused}"
    );
    assert!(flake.outputs.values().all(|p| !is_valid(p)));

    // With it, the flake is built, and what it built is exactly what the lock names.
    let fetcher = Fetcher::new(vec![nix_cli(&cache, true)], options).unwrap();
    let summary = fetcher
        .fetch_closure_with_progress(&flake.roots(), &recipes, Arc::default())
        .await
        .unwrap();
    for path in flake.outputs.values() {
        assert!(is_valid(path), "{path} is not valid after the build");
        nix(&["nix-store", "--verify-path", &path.to_string()]);
    }
    assert_eq!(
        std::fs::read_to_string(flake.outputs["out"].to_path_buf()).unwrap(),
        format!("built {}\n", flake.tag)
    );
    assert_eq!(summary.paths_built, 2, "{summary:?}");
    assert_eq!(summary.closure, flake.roots());
    let recorded = InstallRecord::open(&record_file).unwrap().all().unwrap();
    let origin = format!(
        "nix build {}#{} (via {cache})",
        flake.locked_url, flake.attr_path
    );
    assert_eq!(
        recorded
            .iter()
            .map(|r| (r.path.clone(), r.origin.clone()))
            .collect::<Vec<_>>(),
        flake
            .roots()
            .into_iter()
            .map(|p| (p, origin.clone()))
            .collect::<Vec<_>>()
    );

    // Valid now: a second fetch builds nothing.
    let again = fetcher
        .fetch_closure_with_progress(&flake.roots(), &recipes, Arc::default())
        .await
        .unwrap();
    assert_eq!((again.paths_built, again.paths_already_valid), (0, 2));
    assert_eq!(processes_mentioning(&flake.tag), Vec::<String>::new());
}

#[tokio::test]
async fn a_lock_naming_other_outputs_than_the_flake_builds_is_refused() {
    if !prereq::ready("a_lock_naming_other_outputs_than_the_flake_builds_is_refused") {
        return;
    }
    let flake = LocalFlake::create(&nix_fixture::unique_tag("flakewrong"));
    let state = tempfile::tempdir().unwrap();
    let cache = empty_cache(state.path());
    // The lock says `out` is another path of the same name: a flake changed since it was locked.
    let actual = flake.outputs["out"].clone();
    let locked = StorePath::parse(&format!(
        "/nix/store/{}-nixlet-flake-{}",
        "1".repeat(32),
        flake.tag
    ))
    .unwrap();
    let mut outputs = flake.outputs.clone();
    outputs.insert("out".into(), locked.clone());
    let roots: Vec<StorePath> = outputs.values().cloned().collect();
    let record_file = state.path().join("installed-paths.sqlite");

    let error = Fetcher::new(
        vec![nix_cli(&cache, true)],
        FetchOptions {
            install_record: Some(record_file.clone()),
            ..test_options()
        },
    )
    .unwrap()
    .fetch_closure_with_progress(&roots, &[flake.recipe(outputs)], Arc::default())
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "environment test/flake:1: no cache delivered package \"hello\", and building it \
             from flake {}#{} failed: nix built {actual} for output \"out\", but manifest.lock \
             names {locked}: the flake does not build what was locked, so nothing it built is \
             used (re-lock the environment, or fix the flake)",
            flake.locked_url, flake.attr_path
        )
    );
    // The locked path was never made; what Nix built is only in nixlet's record, for nixlet gc
    // to reclaim, with no root keeping it.
    assert!(!is_valid(&locked) && !locked.to_path_buf().exists());
    let recorded: Vec<StorePath> = InstallRecord::open(&record_file)
        .unwrap()
        .all()
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(recorded, flake.roots());
    let roots_of_actual = nix(&["nix-store", "--query", "--roots", &actual.to_string()]);
    assert_eq!(roots_of_actual.trim(), "", "{actual} is rooted");
    assert_eq!(processes_mentioning(&flake.tag), Vec::<String>::new());
}

#[tokio::test]
async fn a_hanging_build_is_killed_with_its_builder_at_the_timeout() {
    if !prereq::ready("a_hanging_build_is_killed_with_its_builder_at_the_timeout") {
        return;
    }
    // A sleep no other process on the host has: Nix runs the builder in a session of its own,
    // so this is what would survive a kill of `nix`'s process group alone.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let sleep = format!("sleep {}", 100_000 + nanos % 100_000);
    let flake = LocalFlake::with_script(
        &nix_fixture::unique_tag("flakehang"),
        &format!("{sleep}; echo > $out; echo > $doc"),
    );
    let state = tempfile::tempdir().unwrap();
    let cache = empty_cache(state.path());
    let fetcher =
        Fetcher::new(vec![nix_cli_with_timeout(&cache, true, 3)], test_options()).unwrap();
    let started = std::time::Instant::now();
    let error = fetcher
        .fetch_closure_with_progress(
            &flake.roots(),
            &[flake.recipe(flake.outputs.clone())],
            Arc::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "building it from flake {}#{} failed: with substituter {cache}: `nix build` timed \
             out after 3s; its process group was killed",
            flake.locked_url, flake.attr_path
        )),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Orphans are reaped by init shortly after the kill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !processes_mentioning(&sleep).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(processes_mentioning(&sleep), Vec::<String>::new());
    assert_eq!(processes_mentioning(&flake.tag), Vec::<String>::new());
    assert!(flake.outputs.values().all(|p| !is_valid(p)));
}
