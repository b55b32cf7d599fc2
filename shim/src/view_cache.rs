//! Which environment view a Create's inputs give, remembered across Creates, so a warm start
//! neither merges the outputs, nor computes the closure's SBOM from the Nix database, nor
//! encodes the view's NAR just to learn a path it already installed.
//!
//! Why: the view's path is a content address, so it is known only after building the whole
//! view, and the SBOM inside it reads every closure path from the database: about 90 µs per
//! path at every Create (seconds for thousands of paths) before this cache. Everything the view
//! is made from is in the key: nixlet's version (it writes the SBOM), the view's name, the
//! environment and generation, the lock's digest, the outputs with their priorities, and the
//! activation and lock files. The closure adds nothing: it follows from the outputs, which are
//! immutable store paths. A remembered view that is no longer on disk is built again.
//!
//! `<state_dir>/views/<sha256 of the key>` is a symlink to the view, replaced atomically.

use std::path::{Path, PathBuf};

use nixlet_manifest::{ResolvedEnv, StorePath};
use nixlet_store::view::tree::{ViewFile, ViewInput};
use sha2::{Digest, Sha256};

pub struct ViewCache {
    dir: PathBuf,
}

impl ViewCache {
    pub fn new(state_dir: &Path) -> ViewCache {
        ViewCache {
            dir: state_dir.join("views"),
        }
    }

    /// The view these inputs gave before, if it is still in the store.
    pub fn lookup(&self, key: &str) -> Option<StorePath> {
        let target = std::fs::read_link(self.dir.join(key)).ok()?;
        let view = StorePath::parse(target.to_str()?).ok()?;
        std::fs::symlink_metadata(view.to_path_buf()).ok()?;
        Some(view)
    }

    /// Remembers `view` for `key`; a failure only costs the next Create a rebuild.
    pub fn remember(&self, key: &str, view: &StorePath) {
        let link = self.dir.join(key);
        let temporary = self.dir.join(format!(".{key}.{}.new", std::process::id()));
        let result = std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                let _ = std::fs::remove_file(&temporary);
                std::os::unix::fs::symlink(view.to_path_buf(), &temporary)
            })
            .and_then(|()| std::fs::rename(&temporary, &link));
        if let Err(error) = result {
            let _ = std::fs::remove_file(&temporary);
            tracing::warn!(cache = %link.display(), %error, "cannot remember the environment view");
        }
    }
}

/// The hex sha256 of everything the view of `env` is made from.
pub fn view_key(env: &ResolvedEnv, name: &str, inputs: &[ViewInput], files: &[ViewFile]) -> String {
    let mut hash = Sha256::new();
    // Length-prefixed fields, so no two different inputs serialise alike.
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    field(b"nixlet-view-key-1");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(name.as_bytes());
    field(env.display_name().as_bytes());
    field(&env.generation.to_le_bytes());
    field(env.lock_digest.as_ref().map_or(&[][..], |d| &d[..]));
    for input in inputs {
        field(input.path.to_string().as_bytes());
        field(&input.priority.to_le_bytes());
        field(&[u8::from(input.to_install)]);
    }
    field(b"files");
    for file in files {
        field(file.relative_path.as_bytes());
        field(&[u8::from(file.executable)]);
        field(&file.contents);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixlet-env-acme-web";

    #[test]
    fn a_remembered_view_is_found_only_while_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ViewCache::new(dir.path());
        assert_eq!(cache.lookup("k"), None);
        // This view is not in the store: remembered, but not returned.
        let gone = StorePath::parse(VIEW).unwrap();
        cache.remember("k", &gone);
        assert_eq!(
            std::fs::read_link(dir.path().join("views/k")).unwrap(),
            Path::new(VIEW)
        );
        assert_eq!(cache.lookup("k"), None);
    }

    #[test]
    fn every_input_of_the_view_changes_the_key() {
        let input = |priority| ViewInput {
            path: StorePath::parse(VIEW).unwrap(),
            priority,
            to_install: true,
        };
        let file = |contents: &str| ViewFile {
            relative_path: "activate".into(),
            contents: contents.as_bytes().to_vec(),
            executable: true,
        };
        let env = ResolvedEnv {
            reference: "acme/web".parse().unwrap(),
            generation: 3,
            packages: Vec::new(),
            vars: Vec::new(),
            hook_on_activate: None,
            profile: nixlet_manifest::Profile::default(),
            containerize: nixlet_manifest::ContainerizeConfig::default(),
            activate_mode: None,
            included: vec![],
            warnings: vec![],
            manifest_lock: None,
            lock_digest: None,
        };
        let base = view_key(&env, "n", &[input(5)], &[file("a")]);
        assert_eq!(base, view_key(&env, "n", &[input(5)], &[file("a")]));
        assert_ne!(base, view_key(&env, "m", &[input(5)], &[file("a")]));
        assert_ne!(base, view_key(&env, "n", &[input(4)], &[file("a")]));
        assert_ne!(base, view_key(&env, "n", &[input(5)], &[file("b")]));
        let next = ResolvedEnv {
            generation: 4,
            ..env.clone()
        };
        assert_ne!(base, view_key(&next, "n", &[input(5)], &[file("a")]));
    }
}
