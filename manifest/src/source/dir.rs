//! The `dir` source: environments in a local directory tree,
//! `<root>/<owner>/<name>/<N>/manifest.toml` with an optional `manifest.lock` beside it.
//!
//! This mirrors how FloxHub keeps generation N of an environment, and is what the DaemonSet
//! fills from ConfigMaps. The latest generation is the one named by
//! `<root>/<owner>/<name>/current` (a file holding the number, or a symlink to the generation
//! directory), else the highest numbered directory.
//!
//! Symlinks are followed (a ConfigMap volume makes every file a symlink into `..data/`), but
//! only within the root: whatever a link points at is resolved first, and a file or directory
//! that resolves outside the root is refused before it is read, so a link planted in the tree
//! cannot make nixlet read (and quote in an error) any file of the node.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::reference::{parse_generation_number, EnvRef, Selector};
use crate::source::{EnvironmentSource, LoadedEnvironment, SourceError};

pub const MANIFEST_FILE: &str = "manifest.toml";
pub const LOCK_FILE: &str = "manifest.lock";
pub const CURRENT_FILE: &str = "current";

#[derive(Clone, Debug)]
pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirSource { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl EnvironmentSource for DirSource {
    fn describe(&self) -> String {
        format!("dir {}", self.root.display())
    }

    fn load(&self, reference: &EnvRef) -> Result<Option<LoadedEnvironment>, SourceError> {
        let root = match fs::canonicalize(&self.root) {
            Ok(root) => root,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_error(&self.root, source)),
        };
        let root = root.as_path();
        let env_dir = single_child(
            &single_child(&self.root, &reference.owner)?,
            &reference.name,
        )?;
        match fs::metadata(&env_dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(SourceError::NotADirectory { path: env_dir }),
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(read_error(&env_dir, source)),
        }
        resolve_inside(root, &env_dir)?;
        let environment = reference.owner_and_name();

        let (generation, known_lock) = match reference.selector {
            Selector::Generation(generation) => (generation, None),
            Selector::Latest => match current_generation(root, &env_dir)? {
                Some(generation) => (generation, None),
                None => {
                    let highest = generations(&env_dir)?.into_iter().max();
                    let generation = highest.ok_or_else(|| SourceError::NoGenerations {
                        environment: environment.clone(),
                        dir: env_dir.clone(),
                    })?;
                    (generation, None)
                }
            },
            Selector::Digest(digest) => {
                let (generation, lock) = generation_with_lock_digest(root, &env_dir, &digest)?
                    .ok_or_else(|| SourceError::DigestNotFound {
                        environment: environment.clone(),
                        digest: hex::encode(digest),
                        dir: env_dir.clone(),
                    })?;
                (generation, Some(lock))
            }
        };

        let generation_dir = env_dir.join(generation.to_string());
        if !generation_dir.is_dir() {
            return Err(SourceError::GenerationMissing {
                environment,
                generation,
                path: generation_dir,
            });
        }
        resolve_inside(root, &generation_dir)?;
        let manifest_path = generation_dir.join(MANIFEST_FILE);
        let manifest_bytes = fs::read(resolve_inside(root, &manifest_path)?)
            .map_err(|e| read_error(&manifest_path, e))?;
        let manifest_toml =
            String::from_utf8(manifest_bytes).map_err(|_| SourceError::NotUtf8 {
                path: manifest_path.clone(),
            })?;
        let manifest_lock = match known_lock {
            Some(lock) => Some(lock),
            None => read_optional(root, &generation_dir.join(LOCK_FILE))?,
        };
        Ok(Some(LoadedEnvironment {
            reference: reference.clone(),
            generation,
            location: generation_dir.display().to_string(),
            manifest_toml,
            manifest_lock,
        }))
    }
}

/// `dir/name`, refusing any `name` that is not exactly one ordinary path component. References
/// are validated already; this keeps a future caller from walking out of the root.
fn single_child(dir: &Path, name: &str) -> Result<PathBuf, SourceError> {
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(dir.join(name)),
        _ => Err(SourceError::UnsafeName {
            name: name.to_string(),
        }),
    }
}

/// `path` with every symlink resolved, refused unless it lies below `root` (canonical).
fn resolve_inside(root: &Path, path: &Path) -> Result<PathBuf, SourceError> {
    let resolved = fs::canonicalize(path).map_err(|e| read_error(path, e))?;
    if resolved.starts_with(root) {
        Ok(resolved)
    } else {
        Err(SourceError::OutsideRoot {
            path: path.to_path_buf(),
            resolved,
        })
    }
}

/// The generation `current` names, if there is a `current`.
fn current_generation(root: &Path, env_dir: &Path) -> Result<Option<u64>, SourceError> {
    let path = env_dir.join(CURRENT_FILE);
    match fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(&path, source)),
    }
    // Follows symlinks: ConfigMap volumes make every file a symlink into `..data/`.
    let resolved = resolve_inside(root, &path)?;
    let target = fs::metadata(&resolved).map_err(|e| read_error(&path, e))?;
    let invalid = |found: String| SourceError::InvalidCurrent {
        path: path.clone(),
        found,
    };
    if target.is_dir() {
        // A symlink to the generation directory, like a Nix profile's link to its generation.
        let link = fs::read_link(&path).map_err(|_| invalid("a directory".to_string()))?;
        let generation = link
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(parse_generation_number);
        return generation
            .map(Some)
            .ok_or_else(|| invalid(link.display().to_string()));
    }
    let content = fs::read(&resolved).map_err(|e| read_error(&path, e))?;
    let text = String::from_utf8_lossy(&content);
    parse_generation_number(text.trim())
        .map(Some)
        .ok_or_else(|| invalid(text.into_owned()))
}

/// Every numbered generation directory of the environment.
fn generations(env_dir: &Path) -> Result<Vec<u64>, SourceError> {
    let entries = fs::read_dir(env_dir).map_err(|e| read_error(env_dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(env_dir, e))?;
        let Some(generation) = entry.file_name().to_str().and_then(parse_generation_number) else {
            continue;
        };
        if entry.path().is_dir() {
            found.push(generation);
        }
    }
    Ok(found)
}

/// The newest generation whose `manifest.lock` bytes hash to `digest`, with those bytes.
fn generation_with_lock_digest(
    root: &Path,
    env_dir: &Path,
    digest: &[u8; 32],
) -> Result<Option<(u64, Vec<u8>)>, SourceError> {
    let mut candidates = generations(env_dir)?;
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    for generation in candidates {
        let lock_path = env_dir.join(generation.to_string()).join(LOCK_FILE);
        if let Some(lock) = read_optional(root, &lock_path)? {
            if Sha256::digest(&lock).as_slice() == digest {
                return Ok(Some((generation, lock)));
            }
        }
    }
    Ok(None)
}

/// The file at `path`, `None` if there is none (or only a dangling link); refused outside `root`.
fn read_optional(root: &Path, path: &Path) -> Result<Option<Vec<u8>>, SourceError> {
    match fs::canonicalize(path) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(path, source)),
    }
    match fs::read(resolve_inside(root, path)?) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(read_error(path, source)),
    }
}

fn read_error(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST_V1: &str = "version = 1\n[install]\nhello.store-path = \
                               \"/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1\"\n";
    const MANIFEST_V2: &str = "version = 1\n[vars]\nGREETING = \"hi\"\n";
    const LOCK_V1: &str =
        "{\"lockfile-version\": 1, \"manifest\": {\"version\": 1}, \"packages\": []}\n";

    /// A root holding acme/web with generations 1 (with a lock) and 2 (without).
    fn fixture() -> (tempfile::TempDir, DirSource) {
        let root = tempfile::tempdir().unwrap();
        let web = root.path().join("acme/web");
        fs::create_dir_all(web.join("1")).unwrap();
        fs::create_dir_all(web.join("2")).unwrap();
        fs::write(web.join("1").join(MANIFEST_FILE), MANIFEST_V1).unwrap();
        fs::write(web.join("1").join(LOCK_FILE), LOCK_V1).unwrap();
        fs::write(web.join("2").join(MANIFEST_FILE), MANIFEST_V2).unwrap();
        let source = DirSource::new(root.path());
        (root, source)
    }

    fn load(source: &DirSource, reference: &str) -> Result<Option<LoadedEnvironment>, SourceError> {
        source.load(&EnvRef::parse(reference).unwrap())
    }

    fn web_dir(root: &tempfile::TempDir) -> PathBuf {
        root.path().join("acme/web")
    }

    #[test]
    fn describes_itself_by_root() {
        assert_eq!(
            DirSource::new("/var/lib/nixlet/environments").describe(),
            "dir /var/lib/nixlet/environments"
        );
    }

    #[test]
    fn latest_is_the_highest_generation() {
        let (root, source) = fixture();
        // Not generations: a file, a zero-padded name and a non-number.
        fs::write(web_dir(&root).join("9"), "not a dir").unwrap();
        fs::create_dir(web_dir(&root).join("010")).unwrap();
        fs::create_dir(web_dir(&root).join("tmp")).unwrap();
        let loaded = load(&source, "acme/web").unwrap().unwrap();
        assert_eq!(loaded.generation, 2);
        assert_eq!(loaded.manifest_toml, MANIFEST_V2);
        assert_eq!(loaded.manifest_lock, None);
        assert_eq!(
            loaded.manifest_location(),
            web_dir(&root)
                .join("2")
                .join(MANIFEST_FILE)
                .display()
                .to_string()
        );
        assert_eq!(
            loaded.lock_location(),
            web_dir(&root)
                .join("2")
                .join(LOCK_FILE)
                .display()
                .to_string()
        );
        assert_eq!(loaded.reference, EnvRef::parse("acme/web").unwrap());
    }

    #[test]
    fn current_file_names_the_latest_generation() {
        let (root, source) = fixture();
        fs::write(web_dir(&root).join(CURRENT_FILE), " 1\n").unwrap();
        let loaded = load(&source, "acme/web").unwrap().unwrap();
        assert_eq!(loaded.generation, 1);
        assert_eq!(loaded.manifest_lock.as_deref(), Some(LOCK_V1.as_bytes()));
    }

    #[test]
    fn current_symlink_to_a_generation_directory_counts() {
        let (root, source) = fixture();
        std::os::unix::fs::symlink("1", web_dir(&root).join(CURRENT_FILE)).unwrap();
        assert_eq!(load(&source, "acme/web").unwrap().unwrap().generation, 1);
    }

    #[test]
    fn current_as_a_configmap_style_symlink_to_a_file_counts() {
        let (root, source) = fixture();
        let data = web_dir(&root).join("..data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join(CURRENT_FILE), "1").unwrap();
        std::os::unix::fs::symlink("..data/current", web_dir(&root).join(CURRENT_FILE)).unwrap();
        assert_eq!(load(&source, "acme/web").unwrap().unwrap().generation, 1);
    }

    #[test]
    fn current_with_garbage_is_an_error() {
        let (root, source) = fixture();
        let current = web_dir(&root).join(CURRENT_FILE);
        fs::write(&current, "latest\n").unwrap();
        assert_eq!(
            load(&source, "acme/web").unwrap_err().to_string(),
            format!("{current:?} must name a generation (a number from 1 up), found \"latest\\n\"")
        );
    }

    #[test]
    fn current_symlink_to_a_non_generation_directory_is_an_error() {
        let (root, source) = fixture();
        fs::create_dir(web_dir(&root).join("staging")).unwrap();
        let current = web_dir(&root).join(CURRENT_FILE);
        std::os::unix::fs::symlink("staging", &current).unwrap();
        assert_eq!(
            load(&source, "acme/web").unwrap_err().to_string(),
            format!("{current:?} must name a generation (a number from 1 up), found \"staging\"")
        );
    }

    #[test]
    fn current_naming_a_missing_generation_is_an_error() {
        let (root, source) = fixture();
        fs::write(web_dir(&root).join(CURRENT_FILE), "7").unwrap();
        assert_eq!(
            load(&source, "acme/web").unwrap_err().to_string(),
            format!(
                "environment \"acme/web\" has no generation 7: {:?} does not exist",
                web_dir(&root).join("7")
            )
        );
    }

    #[test]
    fn a_generation_selects_that_generation() {
        let (_root, source) = fixture();
        let loaded = load(&source, "acme/web:1").unwrap().unwrap();
        assert_eq!(loaded.generation, 1);
        assert_eq!(loaded.manifest_toml, MANIFEST_V1);
        assert_eq!(loaded.reference.to_string(), "acme/web:1");
    }

    #[test]
    fn a_missing_generation_is_an_error_naming_the_path() {
        let (root, source) = fixture();
        let error = load(&source, "acme/web:3").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "environment \"acme/web\" has no generation 3: {:?} does not exist",
                web_dir(&root).join("3")
            )
        );
    }

    #[test]
    fn a_digest_selects_the_generation_whose_lock_matches() {
        let (_root, source) = fixture();
        let digest = hex::encode(Sha256::digest(LOCK_V1.as_bytes()));
        let loaded = load(&source, &format!("acme/web@sha256:{digest}"))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.generation, 1);
        assert_eq!(loaded.manifest_lock.as_deref(), Some(LOCK_V1.as_bytes()));
    }

    #[test]
    fn a_digest_without_match_says_so() {
        let (root, source) = fixture();
        let digest = hex::encode(Sha256::digest(b"something else"));
        assert_eq!(
            load(&source, &format!("acme/web@sha256:{digest}"))
                .unwrap_err()
                .to_string(),
            format!(
                "no generation of environment \"acme/web\" in {:?} has a manifest.lock whose \
                 sha256 is {digest}",
                web_dir(&root)
            )
        );
    }

    #[test]
    fn an_absent_environment_is_none() {
        let (_root, source) = fixture();
        assert!(load(&source, "acme/api").unwrap().is_none());
        assert!(load(&source, "other/web:1").unwrap().is_none());
        assert!(DirSource::new("/nonexistent/nixlet")
            .load(&EnvRef::parse("acme/web").unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_environment_without_generations_is_an_error() {
        let (root, source) = fixture();
        let empty = root.path().join("acme/empty");
        fs::create_dir_all(&empty).unwrap();
        assert_eq!(
            load(&source, "acme/empty").unwrap_err().to_string(),
            format!("environment \"acme/empty\" has no generations: {empty:?} has no numbered directory")
        );
    }

    #[test]
    fn an_environment_that_is_a_file_is_an_error() {
        let (root, source) = fixture();
        let file = root.path().join("acme/file");
        fs::write(&file, "").unwrap();
        assert_eq!(
            load(&source, "acme/file").unwrap_err().to_string(),
            format!("{file:?} is not a directory")
        );
    }

    #[test]
    fn a_generation_without_manifest_is_a_read_error_naming_the_path() {
        let (root, source) = fixture();
        let manifest = web_dir(&root).join("2").join(MANIFEST_FILE);
        fs::remove_file(&manifest).unwrap();
        let message = load(&source, "acme/web:2").unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot read {manifest:?}: ")),
            "{message}"
        );
    }

    #[test]
    fn a_manifest_that_is_not_utf8_is_an_error() {
        let (root, source) = fixture();
        let manifest = web_dir(&root).join("2").join(MANIFEST_FILE);
        fs::write(&manifest, b"version = \xff").unwrap();
        assert_eq!(
            load(&source, "acme/web:2").unwrap_err().to_string(),
            format!("{manifest:?} is not valid utf-8")
        );
    }

    #[test]
    fn configmap_style_links_inside_the_root_are_followed() {
        let (root, source) = fixture();
        // What a ConfigMap volume looks like: each file a link into `..data`, itself a link to
        // a timestamped directory.
        let generation = web_dir(&root).join("3");
        fs::create_dir_all(generation.join("..2024_01_01")).unwrap();
        fs::write(
            generation.join("..2024_01_01").join(MANIFEST_FILE),
            MANIFEST_V1,
        )
        .unwrap();
        fs::write(generation.join("..2024_01_01").join(LOCK_FILE), LOCK_V1).unwrap();
        std::os::unix::fs::symlink("..2024_01_01", generation.join("..data")).unwrap();
        for file in [MANIFEST_FILE, LOCK_FILE] {
            std::os::unix::fs::symlink(format!("..data/{file}"), generation.join(file)).unwrap();
        }
        let loaded = load(&source, "acme/web:3").unwrap().unwrap();
        assert_eq!(loaded.manifest_toml, MANIFEST_V1);
        assert_eq!(loaded.manifest_lock.as_deref(), Some(LOCK_V1.as_bytes()));
    }

    #[test]
    fn links_out_of_the_root_are_refused_before_reading() {
        // Outside the root: a file whose content must never reach nixlet (nor an error).
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(
            &secret,
            "version = 1
[vars]
SECRET = \"hunter2\"
",
        )
        .unwrap();
        let outside_generation = outside.path().join("5");
        fs::create_dir(&outside_generation).unwrap();
        fs::write(outside_generation.join(MANIFEST_FILE), MANIFEST_V1).unwrap();
        fs::write(outside.path().join("current"), "2").unwrap();
        use std::os::unix::fs::symlink as link;

        type Plant = fn(&Path, &Path, &Path);
        let cases: [(&str, &str, Plant); 7] = [
            ("manifest.toml", "acme/web:2", |web, secret, _| {
                fs::remove_file(web.join("2").join(MANIFEST_FILE)).unwrap();
                link(secret, web.join("2").join(MANIFEST_FILE)).unwrap();
            }),
            ("manifest.lock", "acme/web:2", |web, secret, _| {
                link(secret, web.join("2").join(LOCK_FILE)).unwrap();
            }),
            (
                "lock of a digest search",
                "acme/web@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                |web, secret, _| {
                    link(secret, web.join("2").join(LOCK_FILE)).unwrap();
                },
            ),
            ("current file", "acme/web", |web, _, outside| {
                link(outside.join("current"), web.join(CURRENT_FILE)).unwrap();
            }),
            ("current directory", "acme/web", |web, _, outside| {
                link(outside.join("5"), web.join(CURRENT_FILE)).unwrap();
            }),
            ("generation directory", "acme/web:5", |web, _, outside| {
                link(outside.join("5"), web.join("5")).unwrap();
            }),
            (
                "relative link up and out",
                "acme/web:2",
                |web, secret, _| {
                    fs::remove_file(web.join("2").join(MANIFEST_FILE)).unwrap();
                    let up = "../".repeat(web.join("2").components().count());
                    let target = format!("{up}{}", secret.display());
                    link(target, web.join("2").join(MANIFEST_FILE)).unwrap();
                },
            ),
        ];
        for (what, reference, plant) in cases {
            let (root, source) = fixture();
            plant(&web_dir(&root), &secret, outside.path());
            let error = load(&source, reference).unwrap_err();
            assert!(
                matches!(&error, SourceError::OutsideRoot { resolved, .. }
                    if resolved.starts_with(outside.path().canonicalize().unwrap())),
                "{what}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("outside the source root"),
                "{what}: {message}"
            );
            assert!(!message.contains("hunter2"), "{what}: {message}");
        }

        // The environment directory itself linked out of the root.
        let (root, source) = fixture();
        fs::create_dir_all(outside.path().join("web/1")).unwrap();
        fs::write(
            outside.path().join("web/1").join(MANIFEST_FILE),
            MANIFEST_V1,
        )
        .unwrap();
        link(outside.path().join("web"), root.path().join("acme/api")).unwrap();
        let error = load(&source, "acme/api").unwrap_err();
        assert!(matches!(error, SourceError::OutsideRoot { .. }), "{error}");
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        let root = Path::new("/srv/envs");
        assert_eq!(single_child(root, "acme").unwrap(), root.join("acme"));
        for bad in ["..", ".", "", "a/b", "/etc", "a/"] {
            assert_eq!(
                single_child(root, bad).unwrap_err().to_string(),
                format!("{bad:?} cannot be used as a single directory name")
            );
        }
    }
}
