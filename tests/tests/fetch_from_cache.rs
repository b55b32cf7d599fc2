//! Issue 4 end to end: a pod whose environment's closure is not on the node starts, with the
//! closure fetched by the shim from a signed binary cache on 127.0.0.1 that real Nix made; a
//! tampered cache, a cache signed by an untrusted key and a path no cache has are refused at
//! StartContainer with one `nixlet:` line, the store unchanged and the pod's other containers
//! running. The same holds for a `file://` substituter naming the cache directory itself
//! (a cache on a shared filesystem), read by the shim without any server.

use anyhow::{ensure, Context, Result};
use nixlet_e2e::binary_cache::{
    substituter_toml, unique_tag, BinaryCache, RemoteClosure, SigningKey,
};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::{ContainerSpec, Cri, Pod};
use nixlet_e2e::expect::{assert_refused, environment_of, run_ok, start_fails, ENVIRONMENT};
use nixlet_e2e::flox::FloxManifest;
use nixlet_e2e::http_server::HttpServer;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::nix_fixture::expected_hello_output;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::node_config::manifest;
use nixlet_e2e::store_paths::{
    dump_hash, is_valid, nix_command, run, store_entries_containing, StoreCleanup,
};

const GOOD: &str = "e2e-fetch/good";
const TAMPERED: &str = "e2e-fetch/tampered";
const FOREIGN: &str = "e2e-fetch/foreign";
const MISSING: &str = "e2e-fetch/missing";
const FILE_GOOD: &str = "e2e-fetch/file-good";
const FILE_TAMPERED: &str = "e2e-fetch/file-tampered";
const WARM: &str = "e2e-fetch/warm";
const COLD: &str = "e2e-fetch/cold";

/// The three closures and the cache, made before the node's shim sees any of it.
struct Caches {
    good: RemoteClosure,
    tampered: RemoteClosure,
    foreign: RemoteClosure,
    cache: BinaryCache,
    trusted: SigningKey,
    untrusted: SigningKey,
}

/// Builds three closures, puts them in one cache (good: xz, signed by the trusted key;
/// tampered: uncompressed, signed by the trusted key, one byte of busybox's NAR flipped;
/// foreign: signed by a key the node does not trust) and deletes them from the host store.
fn make_caches(node: &TestNode, cleanup: &StoreCleanup) -> Result<Caches> {
    let work = node.scratch_subdir("fetch")?;
    let keys = work.join("keys");
    let trusted = SigningKey::generate(&keys, &unique_tag("nixlet-e2e-trusted"))?;
    let untrusted = SigningKey::generate(&keys, &unique_tag("nixlet-e2e-untrusted"))?;
    let build = |prefix: &str| -> Result<RemoteClosure> {
        let closure = RemoteClosure::build(&work, &unique_tag(prefix))?;
        cleanup.paths(closure.everything());
        Ok(closure)
    };
    let (good, tampered, foreign) = (build("good")?, build("tampered")?, build("foreign")?);
    let cache = BinaryCache::new(&work.join("cache"))?;
    cache.add(&good, &trusted, "xz")?;
    cache.add(&tampered, &trusted, "none")?;
    cache.add(&foreign, &untrusted, "xz")?;
    cache.flip_nar_byte(&tampered.busybox)?;
    for closure in [&good, &tampered, &foreign] {
        closure.remove_from_host()?;
    }
    Ok(Caches {
        good,
        tampered,
        foreign,
        cache,
        trusted,
        untrusted,
    })
}

fn tool_container(name: &str) -> ContainerSpec {
    ContainerSpec::new(name, EMPTY_IMAGE).command(&["fetched-tool"])
}

/// A closure's entries in `/nix/store` (paths, derivations, temporaries, locks) and which of
/// its paths are valid: what a refused fetch must leave exactly as it was.
fn store_state(closure: &RemoteClosure) -> (Vec<String>, Vec<bool>) {
    (
        store_entries_containing(&closure.tag).into_iter().collect(),
        closure.paths().iter().map(|p| is_valid(p)).collect(),
    )
}

#[test]
fn closure_is_fetched_from_a_signed_cache_and_a_bad_cache_is_refused() {
    let cleanup = StoreCleanup::default();
    for reference in [GOOD, TAMPERED, FOREIGN, MISSING] {
        cleanup.views_of(reference);
    }
    TestNode::run_test(
        "closure_is_fetched_from_a_signed_cache_and_a_bad_cache_is_refused",
        |node| {
            let caches = make_caches(node, &cleanup)?;
            let server = HttpServer::start(caches.cache.root())?;
            node.set_node_config_extra(&format!(
                "{}\n[fetch]\nrequire_signatures = true\n",
                substituter_toml(&server.url(), &[&caches.trusted.public])
            ))?;
            let missing = node.unbuilt_store_path(&unique_tag("never-built"))?;
            for (reference, path) in [
                (GOOD, &caches.good.tool),
                (TAMPERED, &caches.tampered.tool),
                (FOREIGN, &caches.foreign.tool),
                (MISSING, &missing),
            ] {
                node.publish(
                    reference,
                    1,
                    &FloxManifest::new().install("tool", path).toml(),
                )?;
            }
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("fetch", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, GOOD)
                    .annotation(&environment_of("tampered"), TAMPERED)
                    .annotation(&environment_of("foreign"), FOREIGN)
                    .annotation(&environment_of("missing"), MISSING),
            )?;

            let server_id = check_fetched(node, &pod, &caches, &server)?;
            check_tampered(node, &pod, &caches, &server)?;
            check_untrusted(node, &pod, &caches, &server)?;

            let err = start_fails(node, &pod, &tool_container("missing"))?;
            assert_refused(
                &err,
                "fetch",
                MISSING,
                &[&missing, "not in any substituter", &server.url()],
            );

            // The pod's good containers are unaffected by all of that.
            let exec = cri.exec_sync(&server_id, &["fetched-tool"])?;
            ensure!(
                exec.exit_code == 0 && exec.stdout == caches.good.expected_output(),
                "exec in the running container after the refusals: {exec:?}"
            );
            assert_eq!(
                run_ok(cri, &pod, &tool_container("after-refusals"))?,
                caches.good.expected_output()
            );
            Ok(())
        },
    );
}

/// The good closure is fetched once, byte for byte, registered with its signature; a second
/// container does not fetch again. Returns the id of a container left running.
fn check_fetched(
    node: &TestNode,
    pod: &Pod,
    caches: &Caches,
    server: &HttpServer,
) -> Result<String> {
    let cri: &Cri = node.cri();
    let good = &caches.good;
    assert_eq!(
        run_ok(cri, pod, &tool_container("fetched"))?,
        good.expected_output()
    );
    for path in good.paths() {
        ensure!(is_valid(&path), "{path} is not valid after the fetch");
        run(std::process::Command::new("nix-store").args(["--verify-path", &path]))?;
        assert_eq!(
            dump_hash(&path)?,
            good.dump_hashes[&path],
            "{path} differs from what Nix built"
        );
        let sigs = nix_command(&["path-info", "--sigs", &path])?;
        ensure!(
            sigs.contains(&format!("{}:", caches.trusted.name)),
            "{path} was registered without its signature: {sigs}"
        );
    }
    let nars: Vec<String> = good
        .paths()
        .iter()
        .map(|p| caches.cache.nar_request_path(p))
        .collect::<Result<_>>()?;
    let counted = |nars: &[String]| -> Vec<u32> { nars.iter().map(|n| server.count(n)).collect() };
    assert_eq!(
        counted(&nars),
        vec![1, 1, 1],
        "each NAR of the closure downloaded once; requests: {:?}",
        server.counts()
    );

    // Already valid now: a second container runs without a download.
    let bb = format!("{}/bin/busybox", good.busybox);
    let id = cri.run_container(
        pod,
        &ContainerSpec::new("sleeper", EMPTY_IMAGE).command(&[&bb, "sleep", "3600"]),
    )?;
    let exec = cri.exec_sync(&id, &["fetched-tool"])?;
    assert_eq!(exec.stdout, good.expected_output(), "exec: {exec:?}");
    assert_eq!(counted(&nars), vec![1, 1, 1], "no NAR fetched twice");
    Ok(id)
}

/// One byte flipped in busybox's NAR: a `verify` refusal naming busybox and the cache; no path
/// of that closure appears in the store (its other paths depend on busybox).
fn check_tampered(node: &TestNode, pod: &Pod, caches: &Caches, server: &HttpServer) -> Result<()> {
    let tampered = &caches.tampered;
    let before = store_state(tampered);
    let err = start_fails(node, pod, &tool_container("tampered"))?;
    assert_refused(
        &err,
        "verify",
        TAMPERED,
        &[&tampered.busybox, &server.url(), "hash"],
    );
    assert_eq!(
        store_state(tampered),
        before,
        "a refused fetch changed the store"
    );
    ensure!(
        server.count(&caches.cache.nar_request_path(&tampered.busybox)?) >= 1,
        "the tampered NAR was never asked for"
    );
    Ok(())
}

/// Signed by a key the node does not trust: a `verify` refusal naming a path of the closure,
/// the cache and the key; nothing downloaded into the store.
fn check_untrusted(node: &TestNode, pod: &Pod, caches: &Caches, server: &HttpServer) -> Result<()> {
    let foreign = &caches.foreign;
    let before = store_state(foreign);
    let err = start_fails(node, pod, &tool_container("foreign"))?;
    assert_refused(
        &err,
        "verify",
        FOREIGN,
        &[&server.url(), &caches.untrusted.name],
    );
    let named = foreign
        .paths()
        .into_iter()
        .find(|p| err.contains(p.as_str()))
        .context("the error names no path of the closure")?;
    eprintln!("untrusted: the refusal names {named}");
    assert_eq!(
        store_state(foreign),
        before,
        "a refused fetch changed the store"
    );
    Ok(())
}

#[test]
fn closure_is_fetched_from_a_file_cache_directory_and_a_tampered_one_is_refused() {
    let cleanup = StoreCleanup::default();
    for reference in [FILE_GOOD, FILE_TAMPERED] {
        cleanup.views_of(reference);
    }
    TestNode::run_test(
        "closure_is_fetched_from_a_file_cache_directory_and_a_tampered_one_is_refused",
        |node| {
            let work = node.scratch_subdir("file-fetch")?;
            let trusted = SigningKey::generate(&work.join("keys"), &unique_tag("nixlet-e2e-file"))?;
            let build = |prefix: &str| -> Result<RemoteClosure> {
                let closure = RemoteClosure::build(&work, &unique_tag(prefix))?;
                cleanup.paths(closure.everything());
                Ok(closure)
            };
            let (good, tampered) = (build("file-good")?, build("file-tampered")?);
            let cache = BinaryCache::new(&work.join("cache"))?;
            cache.add(&good, &trusted, "zstd")?;
            cache.add(&tampered, &trusted, "none")?;
            cache.flip_nar_byte(&tampered.busybox)?;
            good.remove_from_host()?;
            tampered.remove_from_host()?;
            let root = cache.root().to_str().context("non-UTF-8 scratch dir")?;
            ensure!(
                root.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)),
                "{root} would need percent-encoding in a file URL"
            );
            let url = format!("file://{root}");
            node.set_node_config_extra(&format!(
                "{}\n[fetch]\nrequire_signatures = true\n",
                substituter_toml(&url, &[&trusted.public])
            ))?;
            for (reference, path) in [(FILE_GOOD, &good.tool), (FILE_TAMPERED, &tampered.tool)] {
                node.publish(
                    reference,
                    1,
                    &FloxManifest::new().install("tool", path).toml(),
                )?;
            }
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("file-fetch", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, FILE_GOOD)
                    .annotation(&environment_of("tampered"), FILE_TAMPERED),
            )?;

            assert_eq!(
                run_ok(cri, &pod, &tool_container("fetched"))?,
                good.expected_output()
            );
            for path in good.paths() {
                ensure!(is_valid(&path), "{path} is not valid after the fetch");
                run(std::process::Command::new("nix-store").args(["--verify-path", &path]))?;
                assert_eq!(
                    dump_hash(&path)?,
                    good.dump_hashes[&path],
                    "{path} differs from what Nix built"
                );
            }

            let before = store_state(&tampered);
            let err = start_fails(node, &pod, &tool_container("tampered"))?;
            assert_refused(
                &err,
                "verify",
                FILE_TAMPERED,
                &[&tampered.busybox, &url, "hash"],
            );
            assert_eq!(
                store_state(&tampered),
                before,
                "a refused fetch changed the store"
            );
            Ok(())
        },
    );
}

/// A pod whose closure is on the node asks no cache and builds no client for one (#14): it
/// starts even though the node's only substituter cannot be used at all, its token file being
/// absent (a secret not mounted yet); a pod that needs a missing path is refused on exactly
/// that, naming the file. Before, every shim built its fetcher at its first Create, so the
/// warm pod failed too.
#[test]
fn a_warm_pod_builds_no_fetcher_and_a_cold_one_names_the_broken_substituter() {
    const WARM_TAG: &str = "warm-no-fetcher";
    TestNode::run_test(
        "a_warm_pod_builds_no_fetcher_and_a_cold_one_names_the_broken_substituter",
        |node| {
            let fixture = node.fixture(WARM_TAG)?;
            let token = node.scratch_subdir("secrets")?.join("cache-token");
            // Port 9 (discard) on loopback: nothing listens, and nothing should be asked.
            node.set_node_config_extra(&format!(
                "[[substituters]]\nurl = \"http://127.0.0.1:9\"\ntoken_file = \"{}\"\n",
                token.display()
            ))?;
            node.publish(WARM, 1, &manifest(&[("hello", &fixture.hello)], &[]))?;
            let missing = node.unbuilt_store_path(&unique_tag("never-built"))?;
            node.publish(
                COLD,
                1,
                &FloxManifest::new().install("tool", &missing).toml(),
            )?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("warm", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, WARM)
                    .annotation(&environment_of("cold"), COLD),
            )?;
            let hello = ContainerSpec::new("hello", EMPTY_IMAGE).command(&["hello"]);
            let (code, out) = cri.run_to_exit(&pod, &hello)?;
            ensure!(
                code == 0 && out == expected_hello_output(WARM_TAG),
                "the warm pod did not run hello: exit {code}, output {out:?}"
            );
            let err = start_fails(node, &pod, &tool_container("cold"))?;
            assert_refused(
                &err,
                "fetch",
                COLD,
                &["token file", &token.display().to_string()],
            );
            cri.stop_and_remove_pod(&pod.id)
        },
    );
}
