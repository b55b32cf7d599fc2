//! OCI images made locally with `umoci` and imported with `ctr`, so no registry is involved:
//! - `busybox`: the static busybox plus a few applet links, entrypoint `sleep`; the pod sandbox
//!   ("pause") image and the image of plain runc containers;
//! - `empty`: no layer and no file at all; what a nixlet container needs;
//! - `default-command`: like `empty`, with the command nixlet replaces by the environment's
//!   `[containerize.config] cmd` (the image nixlet ships for pods that give no command).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::prereq::BUSYBOX;

pub const BUSYBOX_IMAGE: &str = "localhost/nixlet-test/busybox:latest";
pub const EMPTY_IMAGE: &str = "localhost/nixlet-test/empty:latest";
pub const DEFAULT_COMMAND_IMAGE: &str = "localhost/nixlet-test/default-command:latest";

/// The image command nixlet replaces with `[containerize.config] cmd` (the shim's
/// `DEFAULT_COMMAND_SENTINEL`).
pub const DEFAULT_COMMAND_SENTINEL: &str = "/.nixlet/default-command";

/// The applets linked into the busybox image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "env", "ls", "touch", "echo", "which", "mount", "id",
];

/// Image `repo` (e.g. `localhost/nixlet-test/busybox`) and the tag the layout gives it:
/// `ctr images import --base-name <repo>` names an image `<repo>:<ref.name>`.
const TAG: &str = "latest";

/// Builds the images under `dir` and imports them into the containerd at `address`
/// (namespace `k8s.io`, where the CRI plugin looks).
pub fn build_and_import(dir: &Path, address: &Path) -> Result<()> {
    let busybox = build_busybox(&dir.join("busybox"))?;
    import(address, &busybox, repo(BUSYBOX_IMAGE))?;
    let empty = build_empty(&dir.join("empty"))?;
    import(address, &empty, repo(EMPTY_IMAGE))?;
    let default_command = build_default_command(&dir.join("default-command"))?;
    import(address, &default_command, repo(DEFAULT_COMMAND_IMAGE))?;
    let listed = images_listed(address)?;
    for image in [BUSYBOX_IMAGE, EMPTY_IMAGE, DEFAULT_COMMAND_IMAGE] {
        if !listed.iter().any(|name| name == image) {
            bail!("{image} is not among the imported images: {listed:?}");
        }
    }
    Ok(())
}

fn repo(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(repo, _)| repo)
}

/// An OCI layout with one layer holding `/bin/busybox` and its applet links; returns its tar.
fn build_busybox(dir: &Path) -> Result<PathBuf> {
    let layout = new_layout(dir)?;
    let bundle = dir.join("bundle");
    umoci(&["unpack", "--image", &layout, path_str(&bundle)?])?;
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin)?;
    fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    umoci(&["repack", "--image", &layout, path_str(&bundle)?])?;
    umoci(&[
        "config",
        "--image",
        &layout,
        "--config.env",
        "PATH=/bin",
        "--config.entrypoint",
        "/bin/sleep",
        "--config.cmd",
        "86400",
    ])?;
    tar_layout(dir)
}

/// An OCI layout with no layer at all; returns its tar.
fn build_empty(dir: &Path) -> Result<PathBuf> {
    let layout = new_layout(dir)?;
    // The usual default PATH: a nixlet container's PATH is this with the environment prepended.
    umoci(&[
        "config",
        "--image",
        &layout,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ])?;
    tar_layout(dir)
}

/// The empty image with the sentinel as its command: a pod may then give no command at all.
fn build_default_command(dir: &Path) -> Result<PathBuf> {
    let layout = new_layout(dir)?;
    umoci(&[
        "config",
        "--image",
        &layout,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--config.cmd",
        DEFAULT_COMMAND_SENTINEL,
    ])?;
    tar_layout(dir)
}

/// `umoci init` + `umoci new` under `dir/oci`; returns the `<layout>:<tag>` image argument.
fn new_layout(dir: &Path) -> Result<String> {
    fs::create_dir_all(dir)?;
    let layout = dir.join("oci");
    umoci(&["init", "--layout", path_str(&layout)?])?;
    let image = format!("{}:{TAG}", path_str(&layout)?);
    umoci(&["new", "--image", &image])?;
    Ok(image)
}

/// `tar` of the layout directory, as `ctr images import` reads it.
fn tar_layout(dir: &Path) -> Result<PathBuf> {
    let tar = dir.join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir.join("oci"))
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    Ok(tar)
}

fn import(address: &Path, tar: &Path, repo: &str) -> Result<()> {
    run(Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args([
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--base-name",
            repo,
        ])
        .arg(tar))
}

/// Image names known to the containerd at `address` in namespace `k8s.io`.
fn images_listed(address: &Path) -> Result<Vec<String>> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["--namespace", "k8s.io", "images", "list", "--quiet"])
        .output()
        .context("running ctr images list")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

fn umoci(args: &[&str]) -> Result<()> {
    run(Command::new("umoci").args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}
