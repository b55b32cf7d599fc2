//! containerd's `imports`, resolved as containerd resolves them: each entry cleaned, a relative
//! one taken from the importing file's directory, an entry with `*` expanded as a glob (sorted),
//! and files loaded breadth-first from the main config, each once.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::containerd_error::ConfigError;
use crate::containerd_schema;
use crate::containerd_version::ContainerdVersion;
use crate::error::InstallError;
use crate::host_root::{clean_absolute, HostRoot};
use crate::managed_file;

/// How a containerd release resolves a relative `imports` entry that contains `*` (checked in
/// containerd's `resolveImports` of each release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelativeGlobs {
    /// containerd 1.6: globbed as written, from containerd's working directory, which is `/`
    /// under systemd.
    FromWorkingDirectory,
    /// containerd 1.7 and later: joined to the importing file's directory first, like every
    /// relative entry.
    FromImportingFile,
}

impl RelativeGlobs {
    pub fn of(version: &ContainerdVersion) -> RelativeGlobs {
        if (version.major, version.minor) < (1, 7) {
            RelativeGlobs::FromWorkingDirectory
        } else {
            RelativeGlobs::FromImportingFile
        }
    }
}

/// The entries of a file's top-level `imports`.
pub fn entries(doc: &DocumentMut, path: &Path) -> Result<Vec<String>, ConfigError> {
    let Some(item) = doc.get("imports") else {
        return Ok(Vec::new());
    };
    let bad = || ConfigError::BadImports {
        path: path.to_path_buf(),
    };
    item.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|value| value.as_str().map(String::from).ok_or_else(bad))
        .collect()
}

/// The host path (or glob) an entry of `importing_file` stands for.
pub fn resolve(entry: &str, importing_file: &Path, globs: RelativeGlobs) -> PathBuf {
    let path = Path::new(entry);
    if path.is_absolute() {
        clean_absolute(path)
    } else if entry.contains('*') && globs == RelativeGlobs::FromWorkingDirectory {
        clean_absolute(&Path::new("/").join(path))
    } else {
        let dir = importing_file.parent().unwrap_or(Path::new("/"));
        clean_absolute(&dir.join(path))
    }
}

/// Whether containerd would load `target` through `entry` (`*` does not cross `/`, as in Go's
/// `filepath.Match`).
pub fn covers(
    entry: &str,
    importing_file: &Path,
    globs: RelativeGlobs,
    target: &Path,
) -> Result<bool, ConfigError> {
    let resolved = resolve(entry, importing_file, globs);
    if !entry.contains('*') {
        return Ok(resolved == target);
    }
    let pattern = glob_pattern(&resolved.to_string_lossy(), entry, importing_file)?;
    Ok(pattern.matches_path_with(target, match_options()))
}

/// The host files an entry loads, in containerd's order.
pub fn expand(
    host: &HostRoot,
    entry: &str,
    importing_file: &Path,
    globs: RelativeGlobs,
) -> Result<Vec<PathBuf>, ConfigError> {
    let resolved = resolve(entry, importing_file, globs);
    if !entry.contains('*') {
        return Ok(vec![resolved]);
    }
    // Only the part below the host root is a pattern; the root is matched literally.
    let root = glob::Pattern::escape(&host.root().to_string_lossy());
    let relative = resolved.to_string_lossy();
    let relative = relative.trim_start_matches('/');
    let local_pattern = format!("{}/{relative}", root.trim_end_matches('/'));
    glob_pattern(&local_pattern, entry, importing_file)?;
    let matches = glob::glob_with(&local_pattern, match_options()).map_err(|error| {
        ConfigError::BadImportPattern {
            path: importing_file.to_path_buf(),
            pattern: entry.to_string(),
            message: error.to_string(),
        }
    })?;
    let mut found: Vec<PathBuf> = matches
        .filter_map(Result::ok)
        .filter_map(|local| {
            local
                .strip_prefix(host.root())
                .ok()
                .map(|relative| Path::new("/").join(relative))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The main config and every file it imports, in the order containerd loads them
/// (breadth-first, each file once). An imported file that does not exist is skipped here; the
/// caller decides whether that matters.
pub fn load_order(
    host: &HostRoot,
    main: &Path,
    main_doc: DocumentMut,
    globs: RelativeGlobs,
) -> Result<Vec<(PathBuf, DocumentMut)>, InstallError> {
    let mut loaded = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = VecDeque::from([(main.to_path_buf(), Some(main_doc))]);
    while let Some((path, doc)) = pending.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let doc = match doc {
            Some(doc) => doc,
            None => match managed_file::read_text_optional(&host.local(&path))? {
                Some(text) => containerd_schema::parse(&text, &path)?,
                None => {
                    tracing::warn!(path = %path.display(), "imported containerd config does not exist");
                    continue;
                }
            },
        };
        for entry in entries(&doc, &path)? {
            for import in expand(host, &entry, &path, globs)? {
                pending.push_back((import, None));
            }
        }
        loaded.push((path, doc));
    }
    Ok(loaded)
}

fn glob_pattern(
    pattern: &str,
    entry: &str,
    importing_file: &Path,
) -> Result<glob::Pattern, ConfigError> {
    glob::Pattern::new(pattern).map_err(|error| ConfigError::BadImportPattern {
        path: importing_file.to_path_buf(),
        pattern: entry.to_string(),
        message: error.to_string(),
    })
}

fn match_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "/etc/containerd/config.toml";

    #[test]
    fn relative_entries_are_taken_from_the_importing_directory() {
        assert_eq!(
            resolve(
                "conf.d/*.toml",
                Path::new(MAIN),
                RelativeGlobs::FromImportingFile
            ),
            Path::new("/etc/containerd/conf.d/*.toml")
        );
        assert_eq!(
            resolve(
                "conf.d/x.toml",
                Path::new(MAIN),
                RelativeGlobs::FromWorkingDirectory
            ),
            Path::new("/etc/containerd/conf.d/x.toml")
        );
        assert_eq!(
            resolve(
                "/etc/./containerd//x.toml",
                Path::new(MAIN),
                RelativeGlobs::FromWorkingDirectory
            ),
            Path::new("/etc/containerd/x.toml")
        );
    }

    #[test]
    fn containerd_1_6_globs_a_relative_pattern_from_its_working_directory() {
        assert_eq!(
            resolve(
                "conf.d/*.toml",
                Path::new(MAIN),
                RelativeGlobs::FromWorkingDirectory
            ),
            Path::new("/conf.d/*.toml")
        );
        let version = |text| ContainerdVersion::parse(text).unwrap();
        assert_eq!(
            RelativeGlobs::of(&version("1.6.20~ds1")),
            RelativeGlobs::FromWorkingDirectory
        );
        assert_eq!(
            RelativeGlobs::of(&version("1.7.24")),
            RelativeGlobs::FromImportingFile
        );
        assert_eq!(
            RelativeGlobs::of(&version("2.1.9")),
            RelativeGlobs::FromImportingFile
        );
    }

    #[test]
    fn globs_cover_files_in_their_directory_only() {
        let target = Path::new("/etc/containerd/conf.d/nixlet.toml");
        let covers = |entry| {
            covers(
                entry,
                Path::new(MAIN),
                RelativeGlobs::FromImportingFile,
                target,
            )
            .unwrap()
        };
        assert!(covers("/etc/containerd/conf.d/*.toml"));
        assert!(covers("conf.d/*"));
        assert!(covers("/etc/containerd/conf.d/nixlet.toml"));
        assert!(!covers("/etc/containerd/*.toml"));
        assert!(!covers("/etc/containerd/conf.d/*.conf"));
    }

    #[test]
    fn expansion_is_sorted_and_below_the_host_root() {
        let dir = tempfile::tempdir().unwrap();
        let conf_d = dir.path().join("etc/containerd/conf.d");
        std::fs::create_dir_all(&conf_d).unwrap();
        for name in ["b.toml", "a.toml", "c.conf"] {
            std::fs::write(conf_d.join(name), "").unwrap();
        }
        let host = HostRoot::new(dir.path());
        assert_eq!(
            expand(
                &host,
                "conf.d/*.toml",
                Path::new(MAIN),
                RelativeGlobs::FromImportingFile
            )
            .unwrap(),
            vec![
                PathBuf::from("/etc/containerd/conf.d/a.toml"),
                PathBuf::from("/etc/containerd/conf.d/b.toml")
            ]
        );
    }
}
