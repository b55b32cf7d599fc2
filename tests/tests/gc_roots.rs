//! GC roots end to end: from Create to Delete the shim holds
//! `/nix/var/nix/gcroots/nixlet/k8s.io.<container id>` pointing at the container's environment
//! view, whose references are the environment's outputs, so host Nix never collects what a
//! running container mounts; the root goes with the container, and a refused Create leaves none.
//!
//! The garbage collection itself is `nix-store --delete` of exactly the container's closure
//! (Nix computes liveness from all roots as `nix-collect-garbage` does, but touches nothing
//! else on the machine). `NIXLET_E2E_FULL_GC=1` runs a real `nix-collect-garbage` instead, which
//! deletes every unrooted path of this machine: only on a machine where nothing else runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use nixlet_e2e::binary_cache::unique_tag;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::cri::ContainerSpec;
use nixlet_e2e::env_fixture::{tool_output, EnvPackages};
use nixlet_e2e::expect::{assert_refused, environment_of, start_fails, ENVIRONMENT};
use nixlet_e2e::flox::FloxManifest;
use nixlet_e2e::images::EMPTY_IMAGE;
use nixlet_e2e::node::TestNode;
use nixlet_e2e::store_paths::{
    closure_of, delete_paths, gc_root_of, is_valid, is_view_of, run, try_delete, StoreCleanup,
    NIXLET_GC_ROOTS,
};

const APP: &str = "e2e-gc/app";
const FULL_GC_ENV: &str = "NIXLET_E2E_FULL_GC";

/// Collects garbage while the container runs: each path of `closure` must survive.
fn collect_garbage(closure: &[String]) -> Result<()> {
    if std::env::var(FULL_GC_ENV).is_ok_and(|v| v == "1") {
        let out = run(&mut Command::new("nix-collect-garbage"))?;
        eprintln!("nix-collect-garbage: {}", out.trim());
        return Ok(());
    }
    for path in closure {
        match try_delete(path) {
            Ok(()) => anyhow::bail!("Nix deleted {path}, which a running container mounts"),
            Err(e) => ensure!(
                e.contains("still alive"),
                "nix-store --delete {path} failed for another reason: {e}"
            ),
        }
    }
    Ok(())
}

/// The store tree of `view` in the node config's default trees directory.
fn tree_of(view: &str) -> PathBuf {
    let hash = view
        .trim_start_matches("/nix/store/")
        .split('-')
        .next()
        .unwrap_or_default();
    Path::new("/nix/var/nixlet/trees").join(hash)
}

fn sleeper(name: &str, busybox: &str) -> ContainerSpec {
    ContainerSpec::new(name, EMPTY_IMAGE).command(&[busybox, "sleep", "3600"])
}

#[test]
fn a_running_containers_closure_is_rooted_until_the_container_is_removed() {
    let cleanup = StoreCleanup::default();
    cleanup.views_of(APP);
    TestNode::run_test(
        "a_running_containers_closure_is_rooted_until_the_container_is_removed",
        |node| {
            let pk = EnvPackages::build(&node.scratch_subdir("env")?, &unique_tag("e2e-gc"))?;
            cleanup.paths(pk.outputs());
            cleanup.paths(pk.derivations()?);
            let manifest = FloxManifest::new()
                .install("tool", &pk.tool_a)
                .install("coreutils", &pk.coreutils);
            node.publish(APP, 1, &manifest.toml())?;
            let cri = node.cri();
            let pod = cri.run_pod(
                &node
                    .pod("gc", NIXLET_HANDLER)
                    .annotation(ENVIRONMENT, APP)
                    .annotation(&environment_of("unresolvable"), "e2e-gc/nope"),
            )?;
            let bb = pk.busybox_bin();

            // A running container: its root points at its view, whose closure is the
            // environment's.
            let server = cri.run_container(&pod, &sleeper("server", &bb))?;
            let view = cri
                .exec_sync(&server, &[&bb, "sh", "-c", "echo $FLOX_ENV"])?
                .stdout
                .trim()
                .to_owned();
            ensure!(is_view_of(&view, APP), "FLOX_ENV={view:?}");
            let root = gc_root_of(&server);
            let target = std::fs::read_link(&root)
                .with_context(|| format!("reading the GC root {}", root.display()))?;
            assert_eq!(target, Path::new(&view), "the root points at the view");
            let closure: Vec<String> = closure_of(&view)?.into_iter().collect();
            let mut expected = vec![
                view.clone(),
                pk.tool_a.clone(),
                pk.coreutils.clone(),
                pk.busybox.clone(),
            ];
            expected.sort();
            assert_eq!(closure, expected, "the view's closure");
            // The container's /nix/store is the view's store tree: exactly that closure.
            let tree = tree_of(&view);
            let mut in_tree: Vec<String> = std::fs::read_dir(&tree)
                .with_context(|| format!("reading the store tree {}", tree.display()))?
                .map(|e| Ok(format!("/nix/store/{}", e?.file_name().to_string_lossy())))
                .collect::<Result<_>>()?;
            in_tree.sort();
            assert_eq!(in_tree, expected, "the store tree of {view}");

            // From here on only what the node does keeps the closure: Nix sees nixlet's root
            // as a root of every path of it, and collecting garbage leaves all of it.
            pk.unroot()?;
            for path in &closure {
                let roots = run(Command::new("nix-store").args(["--query", "--roots", path]))?;
                ensure!(
                    roots.contains(&format!("{} -> {view}", root.display())),
                    "Nix does not see {} as a root of {path}: {roots}",
                    root.display()
                );
            }
            collect_garbage(&closure)?;
            for path in &closure {
                ensure!(
                    is_valid(path) && Path::new(path).exists(),
                    "{path} collected"
                );
            }
            let exec = cri.exec_sync(&server, &["tool"])?;
            assert_eq!(
                (exec.exit_code, exec.stdout.as_str()),
                (0, tool_output("A").as_str()),
                "exec after GC: {exec:?}"
            );

            // Refused Creates leave no root (start_fails checks): the runc shim refusing a
            // prepared container, and nixlet refusing one.
            let broken = ContainerSpec::new("broken", EMPTY_IMAGE).command(&["/no/such/program"]);
            let err = start_fails(node, &pod, &broken)?;
            ensure!(err.contains("/no/such/program"), "unexpected error: {err}");
            let unresolvable = ContainerSpec::new("unresolvable", EMPTY_IMAGE).command(&["tool"]);
            let err = start_fails(node, &pod, &unresolvable)?;
            assert_refused(&err, "resolve", "e2e-gc/nope", &["not found"]);

            // Removing a container drops its root; removing the pod drops the others'.
            let second = cri.run_container(&pod, &sleeper("second", &bb))?;
            ensure!(
                gc_root_of(&second).exists(),
                "the second container has no root"
            );
            cri.stop_container(&server)?;
            cri.wait_exit(&server, Duration::from_secs(10))?;
            cri.remove_container(&server)?;
            ensure!(
                root.symlink_metadata().is_err(),
                "{} outlived its container",
                root.display()
            );
            ensure!(
                gc_root_of(&second).exists(),
                "the second container lost its root"
            );
            cri.stop_and_remove_pod(&pod.id)?;
            ensure!(
                gc_root_of(&second).symlink_metadata().is_err(),
                "the second container's root outlived its pod"
            );
            for id in [&server, &second] {
                let temporary = Path::new(NIXLET_GC_ROOTS).join(format!(".k8s.io.{id}.new"));
                ensure!(!temporary.exists(), "{} left", temporary.display());
            }

            // Nothing keeps the closure any more: Nix may now delete it (the view first, on its
            // own: only nixlet's roots kept it; then the packages, with the tag's other
            // outputs, which refer to busybox too).
            try_delete(&view).map_err(|e| anyhow::anyhow!("deleting {view}: {e}"))?;
            let mut rest = closure.clone();
            rest.extend(pk.outputs());
            delete_paths(&rest).context("deleting the closure once no container uses it")?;
            for path in &closure {
                ensure!(!is_valid(path), "{path} still valid");
            }
            // The tree outlives its store paths until `nixlet gc` (not run here: it would
            // collect other tests' paths) removes it; this test removes its own.
            ensure!(tree.is_dir(), "the tree went with the store paths");
            std::fs::remove_dir_all(&tree)?;
            Ok(())
        },
    );
}
