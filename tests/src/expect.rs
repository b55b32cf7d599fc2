//! Checks the nixlet end-to-end tests share: running a container to success, a refused
//! StartContainer and the one `nixlet:` line it carries, and container environments.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Result};

use crate::containerd_config::RUNC_HANDLER;
use crate::cri::{ContainerSpec, Cri, Pod};
use crate::node::TestNode;
use crate::store_paths::gc_root_of;

pub const ENVIRONMENT: &str = "nixlet.dev/environment";
pub const SKIP_CONTAINERS: &str = "nixlet.dev/skip-containers";
pub const FLOX_ACTIVATE_MODE: &str = "flox.dev/activate-mode";
pub const FLOX_SKIP_CONTAINERS_EXEC: &str = "flox.dev/skip-containers-exec";

/// PATH of the empty images (see images.rs); a nixlet container's PATH ends with it.
pub const EMPTY_IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The per-container environment annotation key.
pub fn environment_of(container: &str) -> String {
    format!("{ENVIRONMENT}.{container}")
}

/// Runs `spec` to completion and insists on exit code 0; returns its stdout.
pub fn run_ok(cri: &Cri, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
    let (code, out) = cri.run_to_exit(pod, spec)?;
    if code != 0 {
        let stderr: Vec<String> = cri
            .log(pod, spec)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.stream == "stderr")
            .map(|l| l.text)
            .collect();
        bail!(
            "{} exited with {code}; stdout: {out:?}; stderr: {stderr:?}",
            spec.name
        );
    }
    Ok(out)
}

/// What a container wrote to stderr, one `\n`-terminated line per log line.
pub fn stderr_of(cri: &Cri, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
    Ok(cri
        .log(pod, spec)?
        .into_iter()
        .filter(|l| l.stream == "stderr")
        .map(|l| l.text + "\n")
        .collect())
}

/// Creates and starts `spec` expecting StartContainer to fail (containerd 1.6 runs the shim's
/// Create there); returns the `nixlet: …` part of the error, or the whole error when it has
/// none. Checks that nothing stays mounted below the container's bundle and that the container
/// holds no GC root.
pub fn start_fails(node: &TestNode, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
    let cri = node.cri();
    let id = cri.create_container(pod, spec)?;
    let err = match cri.start_container(&id) {
        Ok(()) => bail!("{} started but should have failed", spec.name),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("{}: StartContainer failed as expected: {err}", spec.name);
    let left = node.mounts_of(&id)?;
    ensure!(
        left.is_empty(),
        "{} left mounts behind: {left:?}",
        spec.name
    );
    let root = gc_root_of(&id);
    ensure!(
        root.symlink_metadata().is_err(),
        "a failed Create left the GC root {}",
        root.display()
    );
    Ok(nixlet_line(&err).unwrap_or(&err).to_owned())
}

/// The `nixlet: …` message inside a CRI error (containerd prefixes its own context).
pub fn nixlet_line(err: &str) -> Option<&str> {
    err.find("nixlet: ").map(|at| &err[at..])
}

/// Asserts that a refusal is one `nixlet: <phase> <reference>: …` line mentioning `needles`.
pub fn assert_refused(err: &str, phase: &str, reference: &str, needles: &[&str]) {
    let prefix = format!("nixlet: {phase} {reference}: ");
    assert!(
        err.starts_with(&prefix),
        "expected an error starting {prefix:?}, got: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "error does not mention {needle:?}: {err}"
        );
    }
}

/// `NAME=value` lines as a map (other lines are ignored).
pub fn env_map(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Where containerd reports handlers' features to the kubelet (Status, 2.0 and later),
/// `handler` has exactly runc's; nothing to check where it reports none (1.x).
pub fn has_runcs_features(cri: &Cri, handler: &str) -> Result<()> {
    let handlers = cri.runtime_handlers()?;
    let features = |name: &str| {
        handlers
            .iter()
            .find(|listed| listed.name == name)
            .map(|listed| listed.features)
    };
    eprintln!(
        "handler features: {RUNC_HANDLER} {:?}, {handler} {:?}",
        features(RUNC_HANDLER),
        features(handler)
    );
    let Some(runc) = features(RUNC_HANDLER) else {
        return Ok(());
    };
    let Some(checked) = features(handler) else {
        bail!("Status lists {RUNC_HANDLER} but not {handler}");
    };
    ensure!(
        checked == runc,
        "{handler} has features {checked:?}, runc {runc:?}"
    );
    Ok(())
}
