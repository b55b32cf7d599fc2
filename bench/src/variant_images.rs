//! OCI images of the disk scenario's environments, layered as well as images can be: one
//! busybox base layer and one layer with the shared data paths, built once and tagged for every
//! variant (so all variants have those layers byte for byte, and containerd stores them once),
//! then per variant one layer with its own root. That is the best case for images; a
//! Dockerfile that copies the whole application in one layer would share nothing.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::data_closure::DataClosure;
use crate::file_server::FileServer;
use crate::nix_cli::{self, run};
use crate::workdir::BUSYBOX;

pub struct VariantImages {
    pub layout: PathBuf,
    /// Image tag in the layout per variant, in variant order.
    pub tags: Vec<String>,
}

impl VariantImages {
    /// `variants` are the variants' root store paths; every other path of `closure` except
    /// its aggregate root is shared data.
    pub fn obtain(closure: &DataClosure, variants: &[String], shared: &[String]) -> Result<Self> {
        let dir = closure.dir().join("images");
        let layout = dir.join("oci");
        let tags: Vec<String> = (0..variants.len()).map(|v| format!("v{v}")).collect();
        let done = dir.join("complete");
        if done.exists() {
            return Ok(Self { layout, tags });
        }
        eprintln!(
            "nixlet-bench: building {} OCI images (once)",
            variants.len()
        );
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        ensure_in_store(closure)?;
        let layout_arg = layout.display().to_string();
        let base = format!("{layout_arg}:base");
        let bundle = dir.join("bundle");
        umoci(&["init", "--layout", &layout_arg])?;
        umoci(&["new", "--image", &base])?;
        repack_with(&base, &bundle, |rootfs| {
            let bin = rootfs.join("bin");
            fs::create_dir_all(&bin)?;
            fs::copy(BUSYBOX, bin.join("busybox"))?;
            symlink("busybox", bin.join("sh"))?;
            Ok(())
        })?;
        repack_with(&base, &bundle, |rootfs| copy_paths(rootfs, shared))?;
        umoci(&["config", "--image", &base, "--config.env", "PATH=/bin"])?;
        for (tag, root) in tags.iter().zip(variants) {
            umoci(&["tag", "--image", &base, tag])?;
            let image = format!("{layout_arg}:{tag}");
            repack_with(&image, &bundle, |rootfs| {
                copy_paths(rootfs, std::slice::from_ref(root))
            })?;
        }
        umoci(&["gc", "--layout", &layout_arg])?;
        fs::write(done, "")?;
        Ok(Self { layout, tags })
    }
}

/// Unpacks `image`, lets `change` modify its rootfs, and repacks it as a new layer.
fn repack_with(image: &str, bundle: &Path, change: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let bundle_arg = bundle.display().to_string();
    umoci(&["unpack", "--image", image, &bundle_arg])?;
    change(&bundle.join("rootfs"))?;
    umoci(&["repack", "--image", image, &bundle_arg])?;
    fs::remove_dir_all(bundle)?;
    Ok(())
}

fn copy_paths(rootfs: &Path, paths: &[String]) -> Result<()> {
    let store = rootfs.join("nix/store");
    fs::create_dir_all(&store)?;
    run(Command::new("cp").arg("-a").args(paths).arg(&store))?;
    Ok(())
}

fn ensure_in_store(closure: &DataClosure) -> Result<()> {
    if nix_cli::invalid(&closure.paths)?.is_empty() {
        return Ok(());
    }
    let server = FileServer::start(&closure.cache_dir("zstd"))?;
    let cache_home = tempfile::tempdir()?;
    nix_cli::realise(
        &closure.root,
        &server.url(),
        &closure.public_key,
        cache_home.path(),
    )
}

fn umoci(args: &[&str]) -> Result<()> {
    run(Command::new("umoci").args(args)).map(|_| ())
}
