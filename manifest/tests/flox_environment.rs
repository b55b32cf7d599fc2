//! A real-shaped Flox environment (tests/fixtures/flox-env) published as generations of a
//! `dir` source and resolved through the public API, as the shim does.

use std::fs;
use std::path::{Path, PathBuf};

use nixlet_manifest::{
    resolve, DirSource, EnvRef, EnvironmentSource, ResolveError, ResolvedEnv, StorePath,
};
use sha2::{Digest, Sha256};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flox-env");
const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";

/// acme/web with generation 1 (a locked store-path manifest) and 2 (the fixture).
fn publish() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let web = root.path().join("acme/web");
    let first = web.join("1");
    fs::create_dir_all(&first).unwrap();
    fs::write(
        first.join("manifest.toml"),
        format!("version = 1\n\n[install]\nhello.store-path = \"{HELLO}\"\n"),
    )
    .unwrap();
    fs::write(
        first.join("manifest.lock"),
        format!(
            "{{\"lockfile-version\":1,\"manifest\":{{\"version\":1,\"install\":{{\"hello\":\
             {{\"store-path\":\"{HELLO}\"}}}},\"options\":{{}}}},\"packages\":[{{\"install_id\":\
             \"hello\",\"store_path\":\"{HELLO}\",\"system\":\"x86_64-linux\",\"priority\":5}}]}}"
        ),
    )
    .unwrap();
    let second = web.join("2");
    fs::create_dir_all(&second).unwrap();
    for file in ["manifest.toml", "manifest.lock"] {
        fs::copy(Path::new(FIXTURE).join(file), second.join(file)).unwrap();
    }
    (root, web)
}

/// Resolves `reference` from the environments published below `root`, for x86_64-linux.
fn resolve_on_x86_64(root: &Path, reference: &str) -> Result<ResolvedEnv, ResolveError> {
    resolve(
        &sources(root),
        &EnvRef::parse(reference).unwrap(),
        "x86_64-linux",
    )
}

fn sources(root: &Path) -> Vec<Box<dyn EnvironmentSource>> {
    vec![Box::new(DirSource::new(root))]
}

fn digest_of(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

#[test]
fn the_latest_generation_resolves_with_every_package_for_the_node_system() {
    let (root, web) = publish();
    let env = resolve(
        &sources(root.path()),
        &EnvRef::parse("acme/web").unwrap(),
        "aarch64-linux",
    )
    .unwrap();
    assert_eq!(env.display_name(), "acme/web:2");
    let ids: Vec<&str> = env.packages.iter().map(|p| p.install_id.as_str()).collect();
    assert_eq!(ids, vec!["jq", "curl", "hello", "cuda_cudart"]);
    assert_eq!(env.store_paths().len(), 15);
    let lock = fs::read(web.join("2/manifest.lock")).unwrap();
    assert_eq!(env.manifest_lock.as_deref(), Some(lock.as_slice()));
    assert_eq!(
        env.lock_digest.map(hex::encode),
        Some(digest_of(&web.join("2/manifest.lock")))
    );
    assert!(env.needs_activation());
}

#[test]
fn a_digest_pin_selects_by_lock_bytes_whatever_the_generation() {
    let (root, web) = publish();
    fs::write(web.join("current"), "1\n").unwrap();
    let newest = digest_of(&web.join("2/manifest.lock"));
    let env = resolve_on_x86_64(root.path(), &format!("acme/web@sha256:{newest}")).unwrap();
    assert_eq!(env.generation, 2);
    let oldest = digest_of(&web.join("1/manifest.lock"));
    let env = resolve_on_x86_64(root.path(), &format!("acme/web@sha256:{oldest}")).unwrap();
    assert_eq!(env.generation, 1);
    assert_eq!(env.store_paths(), vec![StorePath::parse(HELLO).unwrap()]);
}

#[test]
fn a_wrong_digest_is_an_error() {
    let (root, web) = publish();
    let wrong = hex::encode(Sha256::digest(b"not a lock"));
    let error = resolve_on_x86_64(root.path(), &format!("acme/web@sha256:{wrong}")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "environment \"acme/web@sha256:{wrong}\": dir {}: no generation of environment \
             \"acme/web\" in {web:?} has a manifest.lock whose sha256 is {wrong}",
            root.path().display()
        )
    );
}

#[test]
fn an_unknown_manifest_key_names_the_key_and_the_file() {
    let (root, web) = publish();
    let manifest = web.join("2/manifest.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace("[options]", "[options]\nallow.insecure = true"),
    )
    .unwrap();
    let error = resolve_on_x86_64(root.path(), "acme/web:2").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "environment \"acme/web:2\" generation 2: invalid manifest {:?}: unknown key \
             \"options.allow.insecure\"",
            manifest.display().to_string()
        )
    );
}

#[test]
fn an_edited_manifest_runs_what_was_locked_unless_it_asks_for_another_package() {
    let (root, web) = publish();
    let manifest = web.join("2/manifest.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(
        &manifest,
        text.replace("cuda_cudart.priority = 8", "cuda_cudart.priority = 7"),
    )
    .unwrap();
    let env = resolve_on_x86_64(root.path(), "acme/web").unwrap();
    let cudart = env
        .packages
        .iter()
        .find(|p| p.install_id == "cuda_cudart")
        .unwrap();
    assert_eq!(cudart.priority, 8);
    assert_eq!(
        env.warnings,
        vec![
            "manifest.toml differs from the manifest manifest.lock was made from at \
             \"install.cuda_cudart.priority\" (7 in manifest.toml, 8 in the lock); nixlet runs \
             what was locked"
        ]
    );

    // A new version constraint asks for a package the lock does not hold: Flox would resolve
    // curl again.
    fs::write(&manifest, text.replace("\"^8.12\"", "\"^8.14\"")).unwrap();
    let error = resolve_on_x86_64(root.path(), "acme/web").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "environment \"acme/web\" generation 2 at {:?}: manifest.toml asks for another \
             package than manifest.lock locked at \"install.curl.version\" (\"^8.14\" in \
             manifest.toml, \"^8.12\" in the lock): the lock is older than the manifest. \
             Re-lock the environment with the flox CLI (`flox edit`, or `flox activate` in the \
             project directory) and publish both files again",
            web.join("2").display().to_string()
        )
    );

    fs::write(
        &manifest,
        text.replace("[install]\n", "[install]\nwget.pkg-path = \"wget\"\n"),
    )
    .unwrap();
    let error = resolve_on_x86_64(root.path(), "acme/web").unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "environment \"acme/web\" generation 2 at {:?}: manifest.toml installs install id \
             \"wget\" that manifest.lock does not lock: the lock is older than the manifest. \
             Re-lock the environment with the flox CLI (`flox edit`, or `flox activate` in the \
             project directory) and publish both files again",
            web.join("2").display().to_string()
        )
    );
}
