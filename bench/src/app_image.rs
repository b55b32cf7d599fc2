//! The OCI image equivalent of an `app` closure, layered the usual way: a base layer with the
//! static busybox in `/bin` (as a distribution base image would be) and an application layer
//! holding the closure's store paths at their `/nix/store` paths. Built with umoci once and kept
//! next to the closure's caches.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::data_closure::DataClosure;
use crate::file_server::FileServer;
use crate::nix_cli::{self, run};
use crate::workdir::BUSYBOX;

pub const TAG: &str = "app";

pub struct AppImage {
    /// The OCI layout directory.
    pub layout: PathBuf,
}

impl AppImage {
    pub fn obtain(closure: &DataClosure) -> Result<Self> {
        let dir = closure.dir().join("image");
        let layout = dir.join("oci");
        let done = dir.join("complete");
        if done.exists() {
            return Ok(Self { layout });
        }
        eprintln!(
            "nixlet-bench: building the OCI image of {} (once)",
            closure.root
        );
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        ensure_in_store(closure)?;
        let image = format!("{}:{TAG}", layout.display());
        umoci(&["init", "--layout", &layout.display().to_string()])?;
        umoci(&["new", "--image", &image])?;
        let bundle = dir.join("bundle");
        let bundle_arg = bundle.display().to_string();

        umoci(&["unpack", "--image", &image, &bundle_arg])?;
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin)?;
        fs::copy(BUSYBOX, bin.join("busybox"))?;
        symlink("busybox", bin.join("sh"))?;
        umoci(&["repack", "--image", &image, &bundle_arg])?;
        fs::remove_dir_all(&bundle)?;

        umoci(&["unpack", "--image", &image, &bundle_arg])?;
        let store = bundle.join("rootfs/nix/store");
        fs::create_dir_all(&store)?;
        run(Command::new("cp")
            .arg("-a")
            .args(&closure.paths)
            .arg(&store))?;
        umoci(&["repack", "--image", &image, &bundle_arg])?;
        fs::remove_dir_all(&bundle)?;
        umoci(&["config", "--image", &image, "--config.env", "PATH=/bin"])?;
        umoci(&["gc", "--layout", &layout.display().to_string()])?;
        fs::write(done, "")?;
        Ok(Self { layout })
    }
}

/// The image is made from the store paths themselves: fetch them back if an earlier scenario
/// deleted them.
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
