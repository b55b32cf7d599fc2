//! Copying environments from the DaemonSet's ConfigMap into the node's `dir` source.
//!
//! The ConfigMap is mounted with `items[].path` set to `<owner>/<name>/<N>/manifest.toml` (and
//! `manifest.lock`, `current`), so the mount already has the source's layout; Kubernetes makes
//! each file a symlink into a `..data` directory that it swaps atomically on update. Only files a
//! `dir` source reads are copied, each atomically and only when its bytes changed; nothing is
//! deleted, so a generation a running pod was started from never disappears under it.

use std::io;
use std::path::{Path, PathBuf};

use nixlet_manifest::EnvRef;

const GENERATION_FILES: [&str; 2] = ["manifest.toml", "manifest.lock"];
const CURRENT_FILE: &str = "current";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub written: Vec<PathBuf>,
    pub unchanged: usize,
    /// Entries that are not part of a source's layout, for the log.
    pub ignored: Vec<PathBuf>,
}

pub fn sync_environments(from: &Path, to: &Path) -> io::Result<SyncReport> {
    let mut report = SyncReport::default();
    for owner in visible_dirs(from)? {
        for name in visible_dirs(&from.join(&owner))? {
            let reference = format!("{owner}/{name}");
            if EnvRef::parse(&reference).is_err() {
                report.ignored.push(from.join(&owner).join(&name));
                continue;
            }
            let env_from = from.join(&owner).join(&name);
            let env_to = to.join(&owner).join(&name);
            if env_from.join(CURRENT_FILE).is_file() {
                copy_if_changed(
                    &env_from.join(CURRENT_FILE),
                    &env_to.join(CURRENT_FILE),
                    &mut report,
                )?;
            }
            for generation in visible_dirs(&env_from)? {
                if generation.parse::<u64>().is_err() || generation.starts_with('0') {
                    report.ignored.push(env_from.join(&generation));
                    continue;
                }
                for file in GENERATION_FILES {
                    let source = env_from.join(&generation).join(file);
                    if source.is_file() {
                        copy_if_changed(
                            &source,
                            &env_to.join(&generation).join(file),
                            &mut report,
                        )?;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Directory names under `dir`, following symlinks, without Kubernetes' `..data` machinery.
fn visible_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with("..") || !entry.path().is_dir() {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

fn copy_if_changed(source: &Path, target: &Path, report: &mut SyncReport) -> io::Result<()> {
    let bytes = std::fs::read(source)?;
    if std::fs::read(target).ok().as_deref() == Some(bytes.as_slice()) {
        report.unchanged += 1;
        return Ok(());
    }
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    let temporary = tempfile::NamedTempFile::new_in(parent)?;
    std::fs::write(temporary.path(), &bytes)?;
    temporary.persist(target).map_err(|error| error.error)?;
    report.written.push(target.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Lays files out as the kubelet does for a ConfigMap volume: real files in a timestamped
    /// directory, `..data` pointing at it, visible paths as symlinks through `..data`.
    fn configmap(root: &Path, files: &[(&str, &str)]) {
        let data = root.join("..2026_11_24_17_00_00.000");
        for (path, contents) in files {
            let real = data.join(path);
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::write(&real, contents).unwrap();
        }
        symlink(data.file_name().unwrap(), root.join("..data")).unwrap();
        for (path, _) in files {
            let visible = root.join(path);
            std::fs::create_dir_all(visible.parent().unwrap()).unwrap();
            let depth = Path::new(path).components().count() - 1;
            let up = "../".repeat(depth);
            symlink(format!("{up}..data/{path}"), visible).unwrap();
        }
    }

    #[test]
    fn copies_the_source_layout_and_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("cm"), dir.path().join("envs"));
        std::fs::create_dir_all(&from).unwrap();
        configmap(
            &from,
            &[
                ("acme/web/1/manifest.toml", "version = 1\n"),
                (
                    "acme/web/2/manifest.toml",
                    "version = 1\n[vars]\nA = \"b\"\n",
                ),
                ("acme/web/2/manifest.lock", "{}"),
                ("acme/web/current", "2\n"),
                ("acme/web/2/notes.txt", "not copied"),
            ],
        );
        let report = sync_environments(&from, &to).unwrap();
        assert_eq!(report.written.len(), 4);
        assert_eq!(
            std::fs::read_to_string(to.join("acme/web/2/manifest.lock")).unwrap(),
            "{}"
        );
        assert_eq!(
            std::fs::read_to_string(to.join("acme/web/current")).unwrap(),
            "2\n"
        );
        assert!(!to.join("acme/web/2/notes.txt").exists());
        assert!(!to.join("..data").exists());

        let again = sync_environments(&from, &to).unwrap();
        assert!(again.written.is_empty());
        assert_eq!(again.unchanged, 4);
    }

    #[test]
    fn invalid_names_and_generations_are_ignored_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("cm"), dir.path().join("envs"));
        for path in ["acme/we b/1", "acme/web/01", "acme/web/latest"] {
            std::fs::create_dir_all(from.join(path)).unwrap();
            std::fs::write(from.join(path).join("manifest.toml"), "version = 1").unwrap();
        }
        let report = sync_environments(&from, &to).unwrap();
        assert!(report.written.is_empty());
        assert_eq!(report.ignored.len(), 3);
    }
}
