//! Finding GC roots the way Nix 2.8's garbage collector does (`LocalStore::findRoots`), so that
//! `nixlet gc` keeps at least everything `nix-collect-garbage` keeps:
//!
//! - every symlink anywhere below `gcroots/` whose target is in the store roots the store path
//!   that target lies in (a link to `/nix/store/<hash>-x/bin/y` roots `<hash>-x`);
//! - a symlink there that points outside the store is an indirect root (`gcroots/auto/<hash>`
//!   → `/home/u/result`): when its target is itself a symlink into the store, that roots it;
//! - a regular file below `gcroots/` named like a store path's base name roots that path;
//! - the same walk over the profiles directory (`/nix/var/nix/profiles`);
//! - temporary roots of running Nix processes (`temproots/<pid>`, NUL-separated paths), read
//!   conservatively: every listed path counts, whether its process still runs or not.
//!
//! Unlike Nix, nothing is ever removed here (Nix unlinks dangling links in `gcroots/auto`): a
//! root finder that only reads can run in a dry run too. Unreadable entries are skipped with a
//! warning, except the top directories, whose failure is an error: GC must not run on a
//! partial view of the roots.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use nixlet_manifest::{StorePath, STORE_DIR};

/// Where roots are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDirs {
    /// `/nix/var/nix/gcroots`.
    pub gcroots: PathBuf,
    /// `/nix/var/nix/profiles`, if it is to be walked.
    pub profiles: Option<PathBuf>,
    /// `/nix/var/nix/temproots`, if it is to be read.
    pub temproots: Option<PathBuf>,
}

impl RootDirs {
    /// The directories of a Nix state directory (`/nix/var/nix`), with `gcroots` overridden.
    pub fn of_state_dir(nix_state_dir: &Path, gcroots: PathBuf) -> RootDirs {
        RootDirs {
            gcroots,
            profiles: Some(nix_state_dir.join("profiles")),
            temproots: Some(nix_state_dir.join("temproots")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read gc roots in {}: {source}", path.display())]
pub struct RootsError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The store paths the roots point to (valid or not: the caller decides).
pub fn find_roots(dirs: &RootDirs) -> Result<BTreeSet<StorePath>, RootsError> {
    let mut roots = BTreeSet::new();
    walk_top(&dirs.gcroots, &mut roots)?;
    if let Some(profiles) = &dirs.profiles {
        walk_top(profiles, &mut roots)?;
    }
    if let Some(temproots) = &dirs.temproots {
        read_temproots(temproots, &mut roots)?;
    }
    Ok(roots)
}

fn walk_top(dir: &Path, roots: &mut BTreeSet<StorePath>) -> Result<(), RootsError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RootsError {
            path: dir.to_path_buf(),
            source,
        }),
        Ok(_) => {
            // The top directory must be readable; below it, Nix too skips what it cannot read.
            std::fs::read_dir(dir).map_err(|source| RootsError {
                path: dir.to_path_buf(),
                source,
            })?;
            walk(dir, roots);
            Ok(())
        }
    }
}

fn walk(path: &Path, roots: &mut BTreeSet<StorePath>) {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "skipping unreadable gc root entry");
            return;
        }
    };
    let kind = metadata.file_type();
    if kind.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping unreadable gc root directory");
                return;
            }
        };
        for entry in entries.flatten() {
            walk(&entry.path(), roots);
        }
    } else if kind.is_symlink() {
        let Some(target) = read_link_absolute(path) else {
            return;
        };
        if let Some(root) = store_path_of(&target) {
            tracing::debug!(link = %path.display(), root = %root, "gc root");
            roots.insert(root);
            return;
        }
        // An indirect root: one more level, and only through a symlink.
        let is_link = std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            if let Some(root) = read_link_absolute(&target).and_then(|t| store_path_of(&t)) {
                tracing::debug!(link = %path.display(), via = %target.display(), root = %root, "indirect gc root");
                roots.insert(root);
            }
        }
    } else if kind.is_file() {
        if let Some(root) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| StorePath::from_base_name(name).ok())
        {
            roots.insert(root);
        }
    }
}

fn read_link_absolute(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    Some(if target.is_absolute() {
        target
    } else {
        link.parent().unwrap_or(Path::new("/")).join(target)
    })
}

/// The store path `target` lies in: `/nix/store/<base>` or anything below it. `..` components
/// are resolved lexically first, so a link cannot escape the check.
pub fn store_path_of(target: &Path) -> Option<StorePath> {
    let mut normal: Vec<&std::ffi::OsStr> = Vec::new();
    for component in target.components() {
        match component {
            std::path::Component::Normal(part) => normal.push(part),
            std::path::Component::ParentDir => {
                normal.pop();
            }
            _ => {}
        }
    }
    let store: Vec<&std::ffi::OsStr> = Path::new(STORE_DIR)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    if normal.len() <= store.len() || normal[..store.len()] != store[..] {
        return None;
    }
    StorePath::from_base_name(normal[store.len()].to_str()?).ok()
}

fn read_temproots(dir: &Path, roots: &mut BTreeSet<StorePath>) -> Result<(), RootsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RootsError {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        for item in bytes.split(|b| *b == 0) {
            if let Some(root) = std::str::from_utf8(item)
                .ok()
                .and_then(|s| store_path_of(Path::new(s)))
            {
                roots.insert(root);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const A: &str = "/nix/store/00000000000000000000000000000000-a";
    const B: &str = "/nix/store/11111111111111111111111111111111-b";
    const C: &str = "/nix/store/22222222222222222222222222222222-c";
    const D: &str = "/nix/store/33333333333333333333333333333333-d";
    const E: &str = "/nix/store/44444444444444444444444444444444-e";
    const F: &str = "/nix/store/55555555555555555555555555555555-f";

    fn names(roots: &BTreeSet<StorePath>) -> Vec<&str> {
        roots.iter().map(|r| r.name()).collect()
    }

    #[test]
    fn direct_indirect_file_profile_and_temporary_roots_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let gcroots = dir.path().join("gcroots");
        std::fs::create_dir_all(gcroots.join("nixlet")).unwrap();
        std::fs::create_dir_all(gcroots.join("auto")).unwrap();
        // Direct, to a file inside a store path.
        symlink(format!("{A}/bin/tool"), gcroots.join("nixlet/k8s.io.abc")).unwrap();
        // Indirect: auto/<x> → result (outside the store) → store path.
        let result = dir.path().join("home/result");
        std::fs::create_dir_all(result.parent().unwrap()).unwrap();
        symlink(B, &result).unwrap();
        symlink(&result, gcroots.join("auto/xyz")).unwrap();
        // Indirect through a relative link, and a dangling one that roots nothing.
        symlink("../home/result", gcroots.join("relative")).unwrap();
        symlink("/nonexistent/result", gcroots.join("auto/dangling")).unwrap();
        // A regular file named after a store path.
        std::fs::write(gcroots.join(&C["/nix/store/".len()..]), "").unwrap();
        // Not roots: a file with another name, a link to a directory outside the store.
        std::fs::write(gcroots.join("README"), "").unwrap();
        symlink(dir.path(), gcroots.join("elsewhere")).unwrap();
        // A link that climbs out of the store does not count as in it.
        symlink(format!("{D}/../../../etc"), gcroots.join("escape")).unwrap();

        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(profiles.join("per-user/root")).unwrap();
        symlink(D, profiles.join("per-user/root/profile-1-link")).unwrap();
        let temproots = dir.path().join("temproots");
        std::fs::create_dir(&temproots).unwrap();
        std::fs::write(temproots.join("1234"), format!("{E}\0{F}\0")).unwrap();

        let roots = find_roots(&RootDirs {
            gcroots,
            profiles: Some(profiles),
            temproots: Some(temproots),
        })
        .unwrap();
        assert_eq!(names(&roots), vec!["a", "b", "c", "d", "e", "f"]);
        assert!(
            dir.path().join("gcroots/auto/dangling").is_symlink(),
            "nothing is removed"
        );
    }

    #[test]
    fn missing_directories_have_no_roots() {
        let roots = find_roots(&RootDirs::of_state_dir(
            Path::new("/nonexistent/nix/var/nix"),
            "/nonexistent/gcroots".into(),
        ))
        .unwrap();
        assert!(roots.is_empty());
    }

    #[test]
    fn store_paths_of_targets() {
        assert_eq!(
            store_path_of(Path::new(&format!("{A}/bin/x"))).map(|p| p.to_string()),
            Some(A.to_string())
        );
        assert_eq!(store_path_of(Path::new("/nix/store")), None);
        assert_eq!(store_path_of(Path::new("/nix/store/not-a-path")), None);
        assert_eq!(
            store_path_of(Path::new(&format!("/tmp/../nix/store/x/..{}", &A[10..])))
                .map(|p| p.to_string()),
            Some(A.to_string())
        );
    }
}
