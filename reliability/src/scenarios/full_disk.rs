//! A full disk while a closure is unpacked. The store's temporaries live in the store itself
//! (the final step is a rename), so the small filesystem must be the store: containerd runs in
//! a private mount namespace where `/nix/store` is an overlay of the host's store with a small
//! tmpfs on top, filled with a ballast file but for a little room. Everything nixlet writes to
//! the store then lands on the tmpfs, which only that namespace sees; the host's store and Nix
//! database are not touched (the node registers paths in a Nix state directory of its own, made
//! by `nix-store --init`), and the namespace ends with containerd and its shims.
//!
//! A pod of an environment whose busybox does not fit must fail with a clear `nixlet: install …
//! no space` error and leave no partial path; once the ballast is removed, the kubelet's retry
//! must run it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use nixlet_e2e::containerd::mount_namespace_wrapper;
use nixlet_e2e::containerd_config::NIXLET_HANDLER;
use nixlet_e2e::http_server::HttpServer;
use nixlet_e2e::store_paths::{dump_hash, STORE_DIR};

use super::Context;
use crate::kubelet::{self, app};
use crate::rel_node::{NodeOptions, RelNode, PRIVATE_NIX_STATE};
use crate::remote_envs::{CacheSet, RemoteEnv};
use crate::results::{RunRecord, ScenarioReport};

const ENVIRONMENT: &str = "nixlet.dev/environment";
/// The tmpfs under the store: room for the temporaries of a few small paths, not for busybox.
const TMPFS_BYTES: u64 = 64 << 20;
/// What the ballast leaves free.
const ROOM: u64 = 256 << 10;
const RECOVERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The tmpfs, relative to the node's scratch directory.
const SMALL_FS: &str = "small-store-fs";

pub fn run(ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
    let runs = ctx.runs(1, 3);
    report.method = vec![
        format!("containerd runs in a private mount namespace (`unshare --mount`) where `/nix/store` is an overlay of the host's store with a {} MiB tmpfs on top, filled by a ballast file to {} KiB of room: every store write of that node (temporaries, paths, views) lands on the tmpfs, which only the namespace sees; the host's store and Nix database are untouched (the node registers paths in a Nix database of its own, made by `nix-store --init`, and the checks run Nix inside the namespace with it).", TMPFS_BYTES >> 20, ROOM >> 10),
        format!("{runs} run(s): a pod of an environment whose busybox (about 1 MiB) does not fit. Its StartContainer must fail with an error starting `nixlet: install` that says there is no space left, the store must hold no temporary and no partial path of the closure (every path of it there must hash as in the cache), and once the ballast is removed the kubelet's retry must run the pod. Recovery: from freeing the space until the pod ran."),
    ];
    let work = ctx.dir("full-disk")?;
    let set = CacheSet::build(&work, &format!("reldisk{}", std::process::id()), 1, "xz")?;
    let node = RelNode::start(
        "reliability-full-disk",
        NodeOptions {
            wrapper: Some(Box::new(|scratch: &Path| {
                namespace_wrapper(&scratch.join(SMALL_FS))
            })),
            private_store: true,
            // As on a real node: the agent reads the shims' telemetry and removes the files of
            // exited shims (without it they stay by design).
            agent: true,
        },
    )?;
    let outcome = scenario(&node, &set, runs, report);
    report.teardown_leaks.extend(node.finish());
    report.teardown_leaks.extend(set.cleanup());
    outcome
}

/// A mount namespace for containerd where the tmpfs and the overlay are mounted.
fn namespace_wrapper(small_fs: &Path) -> Vec<String> {
    let _ = fs::create_dir_all(small_fs);
    let fs_dir = small_fs.display();
    mount_namespace_wrapper(&format!(
        "mount -t tmpfs -o size={TMPFS_BYTES},mode=0755 nixlet-rel-small {fs_dir}\n\
         mkdir {fs_dir}/upper {fs_dir}/work\n\
         mount -t overlay nixlet-rel-store -o lowerdir={STORE_DIR},upperdir={fs_dir}/upper,workdir={fs_dir}/work {STORE_DIR}"
    ))
}

fn scenario(
    node: &RelNode,
    set: &CacheSet,
    runs: usize,
    report: &mut ScenarioReport,
) -> Result<()> {
    let env = &set.envs[0];
    set.publish(node)?;
    let cache = HttpServer::start(&set.dir)?;
    node.set_substituters(&set.substituter(&cache.url()))?;
    let pid = node
        .node
        .containerd_pid()
        .context("containerd has no pid")?;
    // What containerd's namespace sees, reached through its root.
    let ns_root = PathBuf::from(format!("/proc/{pid}/root"));
    let scratch = node.node.scratch_path().context("no scratch")?.to_owned();
    let small_fs = ns_root.join(scratch.join(SMALL_FS).strip_prefix("/")?);
    let ns_store = ns_root.join(STORE_DIR.trim_start_matches('/'));
    let nix_state = scratch.join(PRIVATE_NIX_STATE);
    let mounted = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    if !mounted.contains("nixlet-rel-store") {
        bail!("containerd's namespace has no overlay on {STORE_DIR}:\n{mounted}");
    }
    let baseline = {
        let _ = node.settled_census();
        node.census()
    };
    for i in 0..runs {
        eprintln!("full-disk: run {}/{runs}", i + 1);
        let mut record = RunRecord::new("busybox does not fit");
        if let Err(e) = one_run(
            node,
            env,
            &small_fs,
            (&ns_store, pid, &nix_state),
            &mut record,
        ) {
            record.fail(format!("{e:#}"));
        }
        super::closing::remove_pods(node, &mut record);
        let after = node.settled_census();
        record.leaks.extend(after.leaks_since(&baseline));
        record
            .invalid_paths
            .extend(invalid_in(&ns_store, pid, &nix_state, env));
        clear_store(&ns_store, env)?;
        report.runs.push(record);
    }
    report.findings.push(
        "The full store failed the Create with a clear error naming the path and the lack of space, left no partial path, and the same pod started once space was freed."
            .into(),
    );
    Ok(())
}

/// The namespace's store as seen from the host, containerd's pid, the node's Nix state.
type NsStore<'a> = (&'a Path, u32, &'a Path);

fn one_run(
    node: &RelNode,
    env: &RemoteEnv,
    small_fs: &Path,
    store: NsStore<'_>,
    record: &mut RunRecord,
) -> Result<()> {
    let (ns_store, pid, nix_state) = store;
    let ballast = small_fs.join("ballast");
    fill_leaving(&ballast, ROOM)?;
    let spec = node
        .node
        .pod("full-disk", NIXLET_HANDLER)
        .annotation(ENVIRONMENT, &env.reference);
    let cri = node.node.cri();
    let pod = cri.run_pod(&spec)?;
    node.ids().remember(&pod.id);
    let container = cri.create_container(&pod, &app(0))?;
    node.ids().remember(&container);
    let refused = match cri.start_container(&container) {
        Ok(()) => bail!("the pod started although its closure cannot fit"),
        Err(e) => format!("{e:#}"),
    };
    let line = refused
        .lines()
        .find(|l| l.contains("nixlet:"))
        .unwrap_or(&refused)
        .to_owned();
    let nixlet = &line[line.find("nixlet:").unwrap_or(0)..];
    record.note(format!("refused with: {nixlet}"));
    if !nixlet.starts_with("nixlet: install") || !nixlet.contains("No space left on device") {
        record.fail("the error does not say `nixlet: install …` with no space left");
    }
    for leftover in partials(ns_store, pid, nix_state, env) {
        record.fail(format!("left after the refusal: {leftover}"));
    }
    fs::remove_file(&ballast).context("freeing space")?;
    let freed = Instant::now();
    let running = kubelet::recover(node.ids(), cri, &spec, &pod, RECOVERY_DEADLINE)?;
    record.recovery_ms = Some(freed.elapsed().as_secs_f64() * 1000.0);
    if running.output != env.closure.expected_output() {
        record.fail(format!(
            "the retried container printed {:?}",
            running.output
        ));
    }
    Ok(())
}

/// Writes `file` until its filesystem is full, then shrinks it to leave `room` bytes.
fn fill_leaving(file: &Path, room: u64) -> Result<()> {
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match out.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e).context("filling the small store"),
        }
    }
    out.set_len(written.saturating_sub(room))?;
    out.sync_all()?;
    Ok(())
}

/// Temporaries of the closure, and invalid closure paths.
fn partials(ns_store: &Path, pid: u32, nix_state: &Path, env: &RemoteEnv) -> Vec<String> {
    let mut found = Vec::new();
    for path in env.closure.paths() {
        let base = path.trim_start_matches(&format!("{STORE_DIR}/"));
        let temp = ns_store.join(format!(".nixlet-{base}"));
        if temp.symlink_metadata().is_ok() {
            found.push(format!("temporary {}", temp.display()));
        }
    }
    found.extend(invalid_in(ns_store, pid, nix_state, env));
    found
}

/// Closure paths present in the namespace's store that its Nix does not hold valid (`nix-store
/// --verify-path` run in containerd's mount namespace with the node's Nix state), or whose NAR
/// differs from the one built.
fn invalid_in(ns_store: &Path, pid: u32, nix_state: &Path, env: &RemoteEnv) -> Vec<String> {
    let mut invalid = Vec::new();
    for path in env.closure.paths() {
        let base = path.trim_start_matches(&format!("{STORE_DIR}/"));
        let here = ns_store.join(base);
        if here.symlink_metadata().is_err() {
            continue;
        }
        let verified = Command::new("nsenter")
            .args([
                "--target",
                &pid.to_string(),
                "--mount",
                "--",
                "nix-store",
                "--verify-path",
                &path,
            ])
            .env("NIX_STATE_DIR", nix_state)
            .stdin(Stdio::null())
            .output();
        match verified {
            Ok(out) if out.status.success() => {}
            Ok(out) => invalid.push(format!(
                "{path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => invalid.push(format!("{path}: cannot run nsenter: {e}")),
        }
        let expected = &env.closure.dump_hashes[&path];
        match dump_hash(&here.display().to_string()) {
            Ok(actual) if &actual == expected => {}
            Ok(actual) => invalid.push(format!("{path} hashes to {actual}, not {expected}")),
            Err(e) => invalid.push(format!("{path}: {e:#}")),
        }
    }
    invalid
}

/// Removes the closure and views from the namespace's store (the next run fetches again).
fn clear_store(ns_store: &Path, env: &RemoteEnv) -> Result<()> {
    let view_suffix = format!("-nixlet-env-{}", env.reference.replace('/', "-"));
    let bases: Vec<String> = env
        .closure
        .paths()
        .iter()
        .map(|p| p.trim_start_matches(&format!("{STORE_DIR}/")).to_owned())
        .collect();
    for entry in fs::read_dir(ns_store)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if bases.iter().any(|b| name.contains(b.as_str())) || name.ends_with(&view_suffix) {
            let path = entry.path();
            let removed = if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
