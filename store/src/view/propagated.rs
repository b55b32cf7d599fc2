//! The packages that installed outputs ask to bring along, linked into the view as Flox's
//! environment builder links them (flox repo, `buildenv/builder.pl`: `addPkg`, and the loop over
//! `%postponed` in `buildEnv`):
//!
//! - in every view, the paths in `nix-support/propagated-user-env-packages` (nixpkgs' `buildEnv`
//!   rule, which Flox keeps for its `run` and `dev` outputs alike);
//! - in the dev view only, also those in `nix-support/propagated-build-inputs`, so that a
//!   library's own dependencies sit in the same `lib/`, `include/` and `site-packages/` as the
//!   library (Flox: "treat propagated-build-inputs as propagated-user-env-packages"), except
//!   paths ending in `-stubs`, which Flox skips there.
//!
//! Both are followed transitively. Propagated packages come after every explicit one and lose
//! collisions to them: each takes its propagator's priority, times 1000 when below 1000, plus a
//! counter that grows with every propagated package, so no two tie. Only the first line of each
//! file is read, as Flox reads it. A path that is not on disk is left out, as Flox's `-e` test
//! leaves it; an entry that is not a store path is left out with a warning, so nothing outside
//! the store enters a view.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use nixlet_manifest::StorePath;

use super::tree::ViewInput;

const USER_ENV_PACKAGES: &str = "nix-support/propagated-user-env-packages";
const BUILD_INPUTS: &str = "nix-support/propagated-build-inputs";

/// A first line longer than this is not a list of store paths a builder wrote; it is cut here so
/// a hostile package cannot make the view's build read without bound.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// Which propagation files a view follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Flox's `run` output: `propagated-user-env-packages` only.
    UserEnvPackages,
    /// Flox's `dev` output: `propagated-build-inputs` as well.
    WithBuildInputs,
}

/// `inputs` followed by every package they propagate, with the priorities Flox gives them.
pub fn with_propagated(inputs: &[ViewInput], propagation: Propagation) -> Vec<ViewInput> {
    with_propagated_located(inputs, propagation, StorePath::to_path_buf)
}

/// `with_propagated`, reading each path at `locate(path)`: tests use real directories outside
/// the store.
fn with_propagated_located(
    inputs: &[ViewInput],
    propagation: Propagation,
    locate: impl Fn(&StorePath) -> PathBuf,
) -> Vec<ViewInput> {
    let mut done: BTreeSet<StorePath> = inputs.iter().map(|input| input.path.clone()).collect();
    let mut all = inputs.to_vec();
    // Path → the priority of the package that propagated it; a later propagator overwrites an
    // earlier one, as the assignment to Flox's `%postponed` does.
    let mut postponed: BTreeMap<StorePath, u32> = BTreeMap::new();
    for input in inputs {
        for path in propagated_by(&locate(&input.path), propagation) {
            if !done.contains(&path) {
                postponed.insert(path, input.priority);
            }
        }
    }
    let mut counter: u32 = 0;
    while !postponed.is_empty() {
        let mut batch: Vec<(StorePath, u32)> = std::mem::take(&mut postponed).into_iter().collect();
        batch.sort_by_key(|(path, _)| package_order(path));
        for (path, propagator) in batch {
            let base = if propagator < 1000 {
                propagator.saturating_mul(1000)
            } else {
                propagator
            };
            let priority = base.saturating_add(counter);
            // Counted for every call, as Flox's `$ignoreCollisionCounter++` is.
            counter = counter.saturating_add(1);
            if done.contains(&path) {
                continue;
            }
            let located = locate(&path);
            if std::fs::symlink_metadata(&located).is_err() {
                tracing::debug!(path = %path, "propagated package is not on disk; not in the view");
                continue;
            }
            done.insert(path.clone());
            for next in propagated_by(&located, propagation) {
                if !done.contains(&next) {
                    postponed.insert(next, priority);
                }
            }
            all.push(ViewInput {
                path,
                priority,
                to_install: true,
            });
        }
    }
    all
}

/// The store paths `package` (a directory on disk) propagates.
fn propagated_by(package: &Path, propagation: Propagation) -> Vec<StorePath> {
    let mut paths = store_paths_in(&package.join(USER_ENV_PACKAGES));
    if propagation == Propagation::WithBuildInputs {
        let build_inputs = store_paths_in(&package.join(BUILD_INPUTS));
        paths.extend(
            build_inputs
                .into_iter()
                .filter(|path| !path.base_name().ends_with("-stubs")),
        );
    }
    paths
}

/// The store paths on the first line of `file`; none when it does not exist.
fn store_paths_in(file: &Path) -> Vec<StorePath> {
    let Ok(opened) = std::fs::File::open(file) else {
        return Vec::new();
    };
    let mut line = Vec::new();
    if let Err(error) = BufReader::new(opened.take(MAX_LINE_BYTES)).read_until(b'\n', &mut line) {
        tracing::warn!(file = %file.display(), %error, "cannot read the propagated packages");
        return Vec::new();
    }
    String::from_utf8_lossy(&line)
        .split_whitespace()
        .filter_map(|word| match StorePath::parse(word) {
            Ok(path) => Some(path),
            Err(error) => {
                tracing::warn!(file = %file.display(), entry = %word, %error, "propagated entry is not a store path; left out of the view");
                None
            }
        })
        .collect()
}

/// Flox's `byPackageName` order: package name, then version (each as its `parseStorePath` cuts
/// them, at every `-` before a digit), then the whole path.
fn package_order(path: &StorePath) -> (String, String, String) {
    let name_and_version = path
        .base_name()
        .split_once('-')
        .map_or("", |(_, rest)| rest);
    let mut pieces = split_before_digits(name_and_version).into_iter();
    let name = pieces.next().unwrap_or_default();
    let version = pieces.next().unwrap_or_default();
    (name, version, path.to_string())
}

/// `text` split at every `-` followed by an ASCII digit (Perl's `split /-(?=\d)/`).
fn split_before_digits(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    for index in 0..bytes.len() {
        if bytes[index] == b'-' && bytes.get(index + 1).is_some_and(u8::is_ascii_digit) {
            pieces.push(text[start..index].to_string());
            start = index + 1;
        }
    }
    pieces.push(text[start..].to_string());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real directories standing in for store paths, each named by its base name.
    struct Packages {
        dir: tempfile::TempDir,
    }

    impl Packages {
        fn new() -> Packages {
            Packages {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn add(&self, base: &str, user_env: &[&str], build_inputs: &[&str]) -> StorePath {
            let root = self.dir.path().join(base);
            std::fs::create_dir_all(root.join("nix-support")).unwrap();
            let line = |bases: &[&str]| {
                bases
                    .iter()
                    .map(|base| format!("/nix/store/{base}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            if !user_env.is_empty() {
                std::fs::write(root.join(USER_ENV_PACKAGES), line(user_env)).unwrap();
            }
            if !build_inputs.is_empty() {
                std::fs::write(root.join(BUILD_INPUTS), format!("{}\n", line(build_inputs)))
                    .unwrap();
            }
            StorePath::from_base_name(base).unwrap()
        }

        fn expand(&self, inputs: &[ViewInput], propagation: Propagation) -> Vec<(String, u32)> {
            let root = self.dir.path().to_path_buf();
            with_propagated_located(inputs, propagation, |path| root.join(path.base_name()))
                .into_iter()
                .map(|input| (input.path.base_name().to_string(), input.priority))
                .collect()
        }
    }

    fn explicit(path: &StorePath, priority: u32) -> ViewInput {
        ViewInput {
            path: path.clone(),
            priority,
            to_install: true,
        }
    }

    const APP: &str = "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-app-1.0";
    const LIB: &str = "1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-lib-2.0";
    const DEP: &str = "2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-dep-3.0";
    const HELPER: &str = "3a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-helper-0.1";
    const STUBS: &str = "4a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-cudart-12.0-stubs";

    #[test]
    fn run_views_follow_user_env_packages_and_dev_views_build_inputs_too() {
        let packages = Packages::new();
        packages.add(DEP, &[], &[]);
        packages.add(HELPER, &[], &[]);
        packages.add(STUBS, &[], &[]);
        let lib = packages.add(LIB, &[HELPER], &[DEP, STUBS]);
        let inputs = [explicit(&lib, 5)];

        assert_eq!(
            packages.expand(&inputs, Propagation::UserEnvPackages),
            vec![(LIB.into(), 5), (HELPER.into(), 5000)]
        );
        // One batch, in package-name order: dep before helper; stubs are never linked.
        assert_eq!(
            packages.expand(&inputs, Propagation::WithBuildInputs),
            vec![(LIB.into(), 5), (DEP.into(), 5000), (HELPER.into(), 5001)]
        );
    }

    #[test]
    fn propagation_is_transitive_and_keeps_the_propagators_priority() {
        let packages = Packages::new();
        packages.add(DEP, &[], &[]);
        packages.add(LIB, &[], &[DEP]);
        let app = packages.add(APP, &[], &[LIB]);
        assert_eq!(
            packages.expand(&[explicit(&app, 3)], Propagation::WithBuildInputs),
            // The second generation keeps 3000 (not multiplied again) plus the counter.
            vec![(APP.into(), 3), (LIB.into(), 3000), (DEP.into(), 3001)]
        );
    }

    #[test]
    fn explicit_paths_cycles_and_missing_paths_are_not_added_again() {
        let packages = Packages::new();
        // dep propagates app back: a cycle; app is explicit and must appear once.
        let dep = packages.add(DEP, &[APP], &[]);
        let app = packages.add(APP, &[DEP, HELPER], &[]);
        // HELPER has no directory: not on disk, so not in the view.
        assert_eq!(
            packages.expand(
                &[explicit(&app, 5), explicit(&dep, 7)],
                Propagation::UserEnvPackages
            ),
            vec![(APP.into(), 5), (DEP.into(), 7)]
        );
    }

    #[test]
    fn entries_outside_the_store_and_later_lines_are_ignored() {
        let packages = Packages::new();
        packages.add(DEP, &[], &[]);
        packages.add(HELPER, &[], &[]);
        let lib = packages.add(LIB, &[], &[]);
        std::fs::write(
            packages.dir.path().join(LIB).join(USER_ENV_PACKAGES),
            format!("/etc /nix/store/{DEP} ../x\n/nix/store/{HELPER}\n"),
        )
        .unwrap();
        assert_eq!(
            packages.expand(&[explicit(&lib, 5)], Propagation::UserEnvPackages),
            vec![(LIB.into(), 5), (DEP.into(), 5000)]
        );
    }

    #[test]
    fn package_order_compares_name_then_version() {
        let path = |base: &str| StorePath::from_base_name(base).unwrap();
        let (name, version, _) = package_order(&path(STUBS));
        assert_eq!((name.as_str(), version.as_str()), ("cudart", "12.0-stubs"));
        let (name, version, _) = package_order(&path(
            "0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-python3.12-requests-2.31.0",
        ));
        assert_eq!(
            (name.as_str(), version.as_str()),
            ("python3.12-requests", "2.31.0")
        );
        assert!(
            package_order(&path("1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-zlib-1.3"))
                > package_order(&path("0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-openssl-3.0"))
        );
    }
}
