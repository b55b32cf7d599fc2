//! Fetches in separate processes: two at once download each NAR once (Nix's per-path lock
//! protocol), and one killed with SIGKILL mid-download leaves nothing a sweep or a re-run does
//! not clean up.
//!
//! The other processes are this test binary again, running only `child_fetch` with the
//! `NIXLET_FETCH_CHILD` variables set.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nixlet_manifest::StorePath;
use nixlet_store::Fetcher;
use support::cache_server::{CacheServer, Fault};
use support::nix_fixture::{self, test_options, Cache, Closure, StoreSnapshot};
use support::prereq;

const CHILD_ENV: &str = "NIXLET_FETCH_CHILD";

/// Not a test on its own: the body of the child processes the other tests start.
#[test]
fn child_fetch() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ' ');
    let (url, key, root) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let substituter = nixlet_store::SubstituterConfig {
        url: url.to_string(),
        trusted_keys: vec![key.to_string()],
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let summary = runtime
        .block_on(async {
            Fetcher::new(vec![substituter], test_options())
                .unwrap()
                .fetch_closure(&[StorePath::parse(root).unwrap()])
                .await
        })
        .unwrap();
    println!(
        "NIXLET_CHILD_SUMMARY fetched={} valid={}",
        summary.paths_fetched, summary.paths_already_valid
    );
}

fn spawn_child(server: &CacheServer, cache: &Cache, root: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fetch",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            CHILD_ENV,
            format!("{} {} {root}", server.url(), cache.public_key),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// (fetched, already valid) as the child printed them.
fn child_summary(child: Child) -> (usize, usize) {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("NIXLET_CHILD_SUMMARY ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("fetched"), field("valid"))
}

#[test]
fn two_processes_fetching_one_closure_download_each_nar_once() {
    if !prereq::ready("two_processes_fetching_one_closure_download_each_nar_once") {
        return;
    }
    let tag = nix_fixture::unique_tag("twoprocs");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "xz");
    let server = CacheServer::start(cache.root());
    // Slow NARs, so that the two fetches certainly overlap.
    server.inject("/nar/", Fault::Delay(Duration::from_millis(400)), None);
    closure.delete();

    let first = spawn_child(&server, &cache, &closure.root);
    let second = spawn_child(&server, &cache, &closure.root);
    let (fetched_a, valid_a) = child_summary(first);
    let (fetched_b, valid_b) = child_summary(second);

    closure.assert_restored();
    for path in &closure.paths {
        let nar = cache.field(path, "URL").unwrap();
        assert_eq!(
            server.count(&nar),
            1,
            "downloads of {nar}: {:?}",
            server.counts()
        );
    }
    // Every path was installed by exactly one of them; the other found it valid.
    assert_eq!(fetched_a + fetched_b, closure.paths.len());
    assert_eq!(
        fetched_a + valid_a + fetched_b + valid_b,
        2 * closure.paths.len()
    );
    StoreSnapshot::assert_no_temporaries(&tag);
}

#[tokio::test]
async fn a_fetch_killed_mid_download_leaves_no_trace_and_a_rerun_completes() {
    if !prereq::ready("a_fetch_killed_mid_download_leaves_no_trace_and_a_rerun_completes") {
        return;
    }
    let tag = nix_fixture::unique_tag("killed");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "none");
    let server = CacheServer::start(cache.root());
    let lib = closure.path_named("lib");
    let lib_nar = cache.field(&lib, "URL").unwrap();
    // lib's NAR stops after 64 kB and hangs; the others arrive and wait for lib.
    server.inject(
        &lib_nar,
        Fault::Stall {
            after: 64 * 1024,
            duration: Duration::from_secs(120),
        },
        None,
    );
    closure.delete();
    let before = StoreSnapshot::take(&tag);

    let child = spawn_child(&server, &cache, &closure.root);
    let temp =
        Path::new("/nix/store").join(format!(".nixlet-{}", lib.trim_start_matches("/nix/store/")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(server.count(&lib_nar) > 0 && temp.join("lib").exists()) {
        assert!(
            Instant::now() < deadline,
            "the child never started unpacking lib"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.wait_with_output().unwrap().status;
    assert!(!status.success());

    // Nothing half-written became visible, nothing was registered; what is left is only the
    // temporary entries and lock files, which no live process holds.
    let after_kill = StoreSnapshot::take(&tag);
    assert_eq!(after_kill.rows, before.rows);
    let new: Vec<&String> = after_kill.entries.difference(&before.entries).collect();
    assert!(
        !new.is_empty(),
        "the kill came mid-download, so a temporary entry exists"
    );
    assert!(
        new.iter()
            .all(|e| e.starts_with(".nixlet-") || e.ends_with(".lock")),
        "only temporary entries and lock files: {new:?}"
    );
    for path in &closure.paths {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} is not installed"
        );
    }

    // A sweep removes every trace...
    nixlet_store::sweep_stale_entries(Path::new("/nix/store")).unwrap();
    assert_eq!(StoreSnapshot::take(&tag), before);

    // ...and a re-run (here without the sweep's help for its own leftovers) completes.
    server.clear_faults();
    let summary = Fetcher::new(vec![cache.substituter(&server.url())], test_options())
        .unwrap()
        .fetch_closure(&closure.roots())
        .await
        .unwrap();
    assert_eq!(summary.paths_fetched, closure.paths.len());
    closure.assert_restored();
    StoreSnapshot::assert_no_temporaries(&tag);
}

#[tokio::test]
async fn a_rerun_cleans_up_after_a_killed_fetch_by_itself() {
    if !prereq::ready("a_rerun_cleans_up_after_a_killed_fetch_by_itself") {
        return;
    }
    let tag = nix_fixture::unique_tag("rerun");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "zstd");
    let server = CacheServer::start(cache.root());
    closure.delete();
    // What a fetch killed mid-download leaves: a partial temporary tree and a stale lock file.
    let lib = closure.path_named("lib");
    let base = lib.trim_start_matches("/nix/store/");
    let temp = Path::new("/nix/store").join(format!(".nixlet-{base}"));
    std::fs::create_dir_all(temp.join("lib/sub")).unwrap();
    std::fs::write(temp.join("lib/libdemo.txt"), "partial").unwrap();
    std::fs::write(Path::new("/nix/store").join(format!("{base}.lock")), "").unwrap();

    Fetcher::new(vec![cache.substituter(&server.url())], test_options())
        .unwrap()
        .fetch_closure(&closure.roots())
        .await
        .unwrap();
    closure.assert_restored();
    assert!(!temp.exists());
    assert!(!Path::new("/nix/store")
        .join(format!("{base}.lock"))
        .exists());
}

#[tokio::test]
async fn a_fetch_given_up_on_keeps_what_it_installed_and_a_retry_continues() {
    if !prereq::ready("a_fetch_given_up_on_keeps_what_it_installed_and_a_retry_continues") {
        return;
    }
    let tag = nix_fixture::unique_tag("abandoned");
    let closure = Closure::build(&tag);
    let cache = Cache::create(&closure.root, &tag, "xz");
    let server = CacheServer::start(cache.root());
    // The root's NAR hangs; everything below it arrives.
    let root_nar = cache.field(&closure.root, "URL").unwrap();
    server.inject(
        &root_nar,
        Fault::Stall {
            after: 64,
            duration: Duration::from_secs(120),
        },
        None,
    );
    closure.delete();
    let dependencies: Vec<&String> = closure
        .paths
        .iter()
        .filter(|p| **p != closure.root)
        .collect();

    let fetcher = Fetcher::new(vec![cache.substituter(&server.url())], test_options()).unwrap();
    let installed = async {
        while !dependencies
            .iter()
            .all(|p| nix_fixture::is_registered(p) && Path::new(p).exists())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The caller (a kubelet timing out a CreateContainer) gives up: the fetch future is dropped.
    let roots = closure.roots();
    tokio::select! {
        result = fetcher.fetch_closure(&roots) => {
            panic!("the fetch cannot finish while the root's nar hangs: {result:?}")
        }
        _ = tokio::time::timeout(Duration::from_secs(60), installed) => {}
    }

    // The abandoned download stops promptly and takes its temporary entry and lock with it.
    let base = closure.root.trim_start_matches("/nix/store/");
    let temp = Path::new("/nix/store").join(format!(".nixlet-{base}"));
    let lock = Path::new("/nix/store").join(format!("{base}.lock"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while temp.exists() || lock.exists() {
        assert!(
            Instant::now() < deadline,
            "leftovers of the abandoned fetch stay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!Path::new(&closure.root).exists());
    assert!(!nix_fixture::is_registered(&closure.root));

    server.clear_faults();
    let summary = fetcher.fetch_closure(&closure.roots()).await.unwrap();
    assert_eq!(summary.paths_fetched, 1, "only the root is left to fetch");
    assert_eq!(summary.paths_already_valid, dependencies.len());
    closure.assert_restored();
}
