//! What the nixlet shim reads on the node: the node config (`NIXLET_CONFIG`) and a `dir`
//! environment source laid out as `<root>/<owner>/<name>/<generation>/manifest.toml`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// The Nix system string of this host, as manifests and the node config name it.
pub fn host_system() -> String {
    format!("{}-linux", std::env::consts::ARCH)
}

/// nixlet's state directory of the node whose config is `config_path` (install record, the
/// shims' telemetry records): beside the config in the node's scratch directory, so that each
/// node's records are its own and go with it.
pub fn state_dir_for(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .unwrap_or(Path::new("/"))
        .join("nixlet-state")
}

/// Writes the node config: one `dir` source at `env_root`, runc as the OCI runtime.
pub fn write_node_config(path: &Path, env_root: &Path) -> Result<()> {
    write_node_config_with(path, env_root, "")
}

/// Writes the node config of [`write_node_config`] followed by `extra` TOML (more `[[sources]]`,
/// `[[substituters]]`, `[fetch]` …). The shim reads the file at every Create, so a test may
/// rewrite it while the node runs.
pub fn write_node_config_with(path: &Path, env_root: &Path, extra: &str) -> Result<()> {
    write_node_config_for_runtime(path, env_root, "runc", extra)
}

/// Like [`write_node_config_with`], with `binary_name` (a name on containerd's PATH or an
/// absolute path) as the OCI runtime the shim hands to the runc shim.
pub fn write_node_config_for_runtime(
    path: &Path,
    env_root: &Path,
    binary_name: &str,
    extra: &str,
) -> Result<()> {
    write_node_config_with_runtime(
        path,
        env_root,
        &format!("binary_name = \"{binary_name}\""),
        extra,
    )
}

/// Like [`write_node_config_with`], with `runtime` as the body of the `[runtime]` table.
pub fn write_node_config_with_runtime(
    path: &Path,
    env_root: &Path,
    runtime: &str,
    extra: &str,
) -> Result<()> {
    write_node_config_full(path, env_root, "", runtime, extra)
}

/// The general form: `top` holds top-level keys (`gc_roots_dir = …`; one that the harness sets
/// too, such as `nix_db`, replaces the harness's), `runtime` the body of `[runtime]`, `extra`
/// more tables.
pub fn write_node_config_full(
    path: &Path,
    env_root: &Path,
    top: &str,
    runtime: &str,
    extra: &str,
) -> Result<()> {
    let overridden = |key: &str| {
        top.lines()
            .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let mut text = String::new();
    for (key, value) in [
        ("system", host_system()),
        ("nix_db", "/nix/var/nix/db/db.sqlite".to_owned()),
        ("state_dir", state_dir_for(path).display().to_string()),
    ] {
        if !overridden(key) {
            text.push_str(&format!("{key} = \"{value}\"\n"));
        }
    }
    text.push_str(top.trim_end());
    text.push_str(&format!(
        r#"

[runtime]
{runtime}

[[sources]]
kind = "dir"
root = "{root}"
"#,
        root = env_root.display(),
    ));
    if !extra.is_empty() {
        text.push('\n');
        text.push_str(extra);
        text.push('\n');
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A `dir` environment source the test fills.
pub struct EnvironmentSource {
    root: PathBuf,
}

impl EnvironmentSource {
    pub fn new(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Publishes `manifest` as generation `generation` of `reference` (`owner/name`).
    pub fn publish(&self, reference: &str, generation: u32, manifest: &str) -> Result<()> {
        let dir = self
            .environment_dir(reference)?
            .join(generation.to_string());
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("manifest.toml"), manifest)?;
        Ok(())
    }

    /// Publishes `manifest` with its `manifest.lock` (written byte for byte).
    pub fn publish_locked(
        &self,
        reference: &str,
        generation: u32,
        manifest: &str,
        lock: &[u8],
    ) -> Result<()> {
        self.publish(reference, generation, manifest)?;
        let dir = self
            .environment_dir(reference)?
            .join(generation.to_string());
        fs::write(dir.join("manifest.lock"), lock)?;
        Ok(())
    }

    /// Writes `<owner>/<name>/current`, naming the latest generation.
    pub fn set_current(&self, reference: &str, generation: u32) -> Result<()> {
        let dir = self.environment_dir(reference)?;
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("current"), format!("{generation}\n"))?;
        Ok(())
    }

    fn environment_dir(&self, reference: &str) -> Result<PathBuf> {
        let (owner, name) = reference
            .split_once('/')
            .with_context(|| format!("{reference:?} is not owner/name"))?;
        ensure!(
            !owner.is_empty() && !name.contains('/'),
            "bad reference {reference:?}"
        );
        Ok(self.root.join(owner).join(name))
    }
}

/// A `version = 1` manifest with store-path installs and `[vars]`, values quoted as TOML basic
/// strings (the values used by the tests contain no quote or backslash).
pub fn manifest(installs: &[(&str, &str)], vars: &[(&str, &str)]) -> String {
    let mut text = String::from("version = 1\n\n[install]\n");
    for (id, store_path) in installs {
        text.push_str(&format!("{id}.store-path = \"{store_path}\"\n"));
    }
    text.push_str("\n[vars]\n");
    for (name, value) in vars {
        text.push_str(&format!("{name} = \"{value}\"\n"));
    }
    text
}
