//! What nixlet does with a runc shim whose answer to `start` it does not understand: a newer
//! bootstrap version, or no answer it can read. The pod must fail at once with a `nixlet:` error
//! that names what was received, and nothing of it may stay behind (the harness checks for
//! shims, sockets and mounts at teardown).
//!
//! No runc shim answers this way today, so a small script stands in for the runc shim of a
//! future containerd: it answers `start` as given and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::node::TestNode;

/// Far below containerd's and the kubelet's deadlines: nixlet must not wait for anything.
const FAST: Duration = Duration::from_secs(10);

fn refused_start(node: &TestNode, answer: &str, expected: &[&str]) -> Result<()> {
    let script = node
        .scratch_subdir("future-shim")?
        .join("containerd-shim-future-v2");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat > /dev/null\nprintf '%s' '{answer}'\n"),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    node.set_runtime_config(&format!("delegate_shim = \"{}\"", script.display()))?;

    let started = Instant::now();
    let error = match node.cri().run_pod(&node.pod("future", NIXLET_HANDLER)) {
        Ok(pod) => anyhow::bail!("pod {} started behind a shim nixlet cannot read", pod.id),
        Err(error) => format!("{error:#}"),
    };
    let took = started.elapsed();
    eprintln!("answer {answer:?} refused after {took:?}: {error}");
    ensure!(took < FAST, "the refusal took {took:?}");
    ensure!(error.contains("nixlet:"), "not a nixlet error: {error}");
    for part in expected {
        ensure!(
            error.contains(part),
            "error does not name {part:?}: {error}"
        );
    }
    let listed = node.cri().pod_ids()?;
    ensure!(
        listed.is_empty(),
        "a half-started pod is listed: {listed:?}"
    );
    Ok(())
}

#[test]
fn an_unknown_bootstrap_version_fails_fast_naming_it() {
    TestNode::run_test(
        "an_unknown_bootstrap_version_fails_fast_naming_it",
        |node| {
            refused_start(
                node,
                r#"{"version":4,"address":"unix:///run/containerd/s/0000","protocol":"ttrpc"}"#,
                &["version 4", r#"\"version\":4"#],
            )
        },
    );
}

#[test]
fn an_unreadable_answer_fails_fast_quoting_it() {
    TestNode::run_test("an_unreadable_answer_fails_fast_quoting_it", |node| {
        refused_start(node, "ready on port 7", &["ready on port 7"])
    });
}
