//! From a reference to what a container needs: the packages of one generation of an
//! environment on this node's system with the store paths of their outputs, its expanded
//! variables, and what activation runs.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::activate_mode::ActivateMode;
use crate::containerize::ContainerizeConfig;
use crate::flake_installable::FlakeInstallable;
use crate::lock::freshness::{check_freshness, StaleLock};
use crate::lock::{LockError, Lockfile};
use crate::manifest::{Manifest, ManifestError};
use crate::outputs::ResolvedOutput;
use crate::packages::{resolve_packages, PackagesError};
use crate::profile::Profile;
use crate::reference::EnvRef;
use crate::source::{EnvironmentSource, LoadedEnvironment, SourceError};
use crate::store_path::StorePath;
use crate::vars::{expand_vars, VarsError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub install_id: String,
    pub priority: u32,
    /// The realised outputs: those to install first, then the others by name.
    pub outputs: Vec<ResolvedOutput>,
    /// For a flake entry of the lock, the flake its outputs come from: what a node that builds
    /// flakes runs `nix build` on when no cache has them.
    pub flake: Option<FlakeInstallable>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// The reference as asked for, selector included.
    pub reference: EnvRef,
    pub generation: u64,
    /// Ordered by priority (lower wins collisions, so it comes first), then install id.
    pub packages: Vec<ResolvedPackage>,
    /// `[vars]` after `${NAME}` expansion, in dependency order.
    pub vars: Vec<(String, String)>,
    /// `[hook] on-activate`, as written.
    pub hook_on_activate: Option<String>,
    pub profile: Profile,
    pub containerize: ContainerizeConfig,
    /// `options.activate.mode`, when the manifest sets it.
    pub activate_mode: Option<ActivateMode>,
    /// With `[include]`, the names of the included environments whose packages, variables
    /// and scripts were merged in, in merge order.
    pub included: Vec<String>,
    /// What the Create's log line should warn about: a lock made from a somewhat different
    /// manifest (see `lock/freshness.rs`).
    pub warnings: Vec<String>,
    /// The exact bytes of the generation's `manifest.lock`, when it has one.
    pub manifest_lock: Option<Vec<u8>>,
    /// The sha256 of [`ResolvedEnv::manifest_lock`]: what a digest pin names.
    pub lock_digest: Option<[u8; 32]>,
}

impl ResolvedEnv {
    /// Every realised output's store path once, in package order.
    pub fn store_paths(&self) -> Vec<StorePath> {
        let mut seen = HashSet::new();
        self.packages
            .iter()
            .flat_map(|package| &package.outputs)
            .filter(|output| seen.insert(&output.store_path))
            .map(|output| output.store_path.clone())
            .collect()
    }

    /// `owner/name:N` with the generation actually resolved, whatever the selector was.
    pub fn display_name(&self) -> String {
        format!("{}:{}", self.reference.owner_and_name(), self.generation)
    }

    /// Whether the container must start through bash sourcing the hook and profile scripts:
    /// a non-blank `on-activate` hook, `[profile] common` or `[profile] bash`.
    pub fn needs_activation(&self) -> bool {
        let hook = self
            .hook_on_activate
            .as_deref()
            .is_some_and(|script| !script.trim().is_empty());
        hook || !self.profile.bash_scripts().is_empty()
    }
}

// Each variant's message carries its cause's, so the cause is not also a `source`: a printer
// that walks the chain (anyhow's `{:#}`) would say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("environment {reference:?} not found (searched: {})", searched_list(.searched))]
    NotFound {
        reference: String,
        /// The sources asked, as they describe themselves.
        searched: Vec<String>,
    },
    #[error("environment {reference:?}: {source_name}: {problem}")]
    Source {
        reference: String,
        source_name: String,
        problem: SourceError,
    },
    #[error(
        "environment {reference:?} generation {generation}: invalid manifest {location:?}: \
         {problem}"
    )]
    InvalidManifest {
        reference: String,
        generation: u64,
        /// The manifest's path or URL.
        location: String,
        /// Boxed because manifest errors are large and resolving is on the happy path.
        problem: Box<ManifestError>,
    },
    #[error(
        "environment {reference:?} generation {generation}: invalid manifest.lock {location:?}: \
         {problem}"
    )]
    InvalidLock {
        reference: String,
        generation: u64,
        /// The lock's path or URL.
        location: String,
        problem: Box<LockError>,
    },
    #[error("environment {reference:?} generation {generation} at {location:?}: {problem}")]
    StaleLock {
        reference: String,
        generation: u64,
        /// The generation's directory or URL.
        location: String,
        problem: StaleLock,
    },
    #[error("environment {reference:?} generation {generation} at {location:?}: {problem}")]
    Packages {
        reference: String,
        generation: u64,
        /// The generation's directory or URL.
        location: String,
        problem: Box<PackagesError>,
    },
    #[error("environment {reference:?} generation {generation}: {problem}")]
    Vars {
        reference: String,
        generation: u64,
        problem: VarsError,
    },
}

fn searched_list(searched: &[String]) -> String {
    if searched.is_empty() {
        "no sources configured".to_string()
    } else {
        searched.join(", ")
    }
}

/// Resolves `reference` for `system` (e.g. `x86_64-linux`) from the first source in `sources`
/// that has the environment.
///
/// A source that has the environment but fails to load it (including an HTTP source whose
/// server is down) ends the search: falling through to the next source could silently run a
/// different environment under the same name.
pub fn resolve(
    sources: &[Box<dyn EnvironmentSource>],
    reference: &EnvRef,
    system: &str,
) -> Result<ResolvedEnv, ResolveError> {
    let mut loaded = None;
    for source in sources {
        let found = source
            .load(reference)
            .map_err(|problem| ResolveError::Source {
                reference: reference.to_string(),
                source_name: source.describe(),
                problem,
            })?;
        if found.is_some() {
            loaded = found;
            break;
        }
    }
    let Some(loaded) = loaded else {
        return Err(ResolveError::NotFound {
            reference: reference.to_string(),
            searched: sources.iter().map(|source| source.describe()).collect(),
        });
    };
    resolve_loaded(loaded, system)
}

/// Resolves one generation a source has loaded.
///
/// With a lock, what runs is what was locked: the packages, variables, hook, profile and
/// options of the lock's manifest (for `[include]`, the merged one). `manifest.toml` only
/// decides whether the lock still belongs to it (`lock/freshness.rs`).
pub fn resolve_loaded(
    loaded: LoadedEnvironment,
    system: &str,
) -> Result<ResolvedEnv, ResolveError> {
    let reference = loaded.reference.to_string();
    let generation = loaded.generation;

    // The lock first: a pre-1.0 environment's manifest has no version either, and the lock's
    // error is the one that says what to do.
    let lock = loaded
        .manifest_lock
        .as_deref()
        .map(Lockfile::parse)
        .transpose()
        .map_err(|problem| ResolveError::InvalidLock {
            reference: reference.clone(),
            generation,
            location: loaded.lock_location(),
            problem: Box::new(problem),
        })?;
    let manifest = Manifest::parse(&loaded.manifest_toml).map_err(|problem| {
        ResolveError::InvalidManifest {
            reference: reference.clone(),
            generation,
            location: loaded.manifest_location(),
            problem: Box::new(problem),
        }
    })?;
    let mut warnings = Vec::new();
    if let Some(lock) = &lock {
        let differs = check_freshness(&manifest, lock, system).map_err(|problem| {
            ResolveError::StaleLock {
                reference: reference.clone(),
                generation,
                location: loaded.location.clone(),
                problem,
            }
        })?;
        warnings.extend(differs);
    }
    let environment = lock.as_ref().map_or(&manifest, |lock| &lock.manifest);
    if !environment.ignored.is_empty() {
        tracing::debug!(
            environment = %reference,
            generation,
            ignored = ?environment.ignored,
            "manifest keys accepted but not acted on by nixlet"
        );
    }
    let packages = resolve_packages(environment, lock.as_ref(), system).map_err(|problem| {
        ResolveError::Packages {
            reference: reference.clone(),
            generation,
            location: loaded.location.clone(),
            problem: Box::new(problem),
        }
    })?;
    let vars = expand_vars(&environment.vars).map_err(|problem| ResolveError::Vars {
        reference: reference.clone(),
        generation,
        problem,
    })?;
    let lock_digest = loaded
        .manifest_lock
        .as_deref()
        .map(|bytes| Sha256::digest(bytes).into());
    let included = lock
        .as_ref()
        .map(|lock| lock.included.clone())
        .unwrap_or_default();
    tracing::debug!(
        environment = %reference,
        generation,
        system,
        schema = %environment.schema,
        packages = packages.len(),
        locked = lock.is_some(),
        included = ?included,
        "resolved environment"
    );

    let environment = environment.clone();
    Ok(ResolvedEnv {
        reference: loaded.reference,
        generation,
        packages,
        vars,
        hook_on_activate: environment.hook_on_activate,
        profile: environment.profile,
        containerize: environment.containerize,
        activate_mode: environment.options.activate_mode,
        included,
        warnings,
        manifest_lock: loaded.manifest_lock,
        lock_digest,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";
    const CURL: &str = "/nix/store/1vabdxmxl9pdbzl4kvxflvzs4qhyapq6-curl-8.6.0-bin";
    const BASH: &str = "/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26";
    const FIXTURE_MANIFEST: &str = include_str!("../tests/fixtures/flox-env/manifest.toml");
    const FIXTURE_LOCK: &[u8] = include_bytes!("../tests/fixtures/flox-env/manifest.lock");

    /// Answers from a fixed table keyed by `owner/name`, always as generation 4; the one
    /// labelled "broken" fails every load.
    struct FakeSource {
        label: &'static str,
        environments: HashMap<String, (String, Option<Vec<u8>>)>,
    }

    impl FakeSource {
        fn new(label: &'static str, manifests: &[(&str, &str)]) -> Box<FakeSource> {
            Box::new(FakeSource {
                label,
                environments: manifests
                    .iter()
                    .map(|(k, v)| (k.to_string(), (v.to_string(), None)))
                    .collect(),
            })
        }

        fn locked(label: &'static str, name: &str, manifest: &str, lock: &[u8]) -> Box<FakeSource> {
            Box::new(FakeSource {
                label,
                environments: HashMap::from([(
                    name.to_string(),
                    (manifest.to_string(), Some(lock.to_vec())),
                )]),
            })
        }
    }

    impl EnvironmentSource for FakeSource {
        fn describe(&self) -> String {
            format!("fake {}", self.label)
        }

        fn load(&self, reference: &EnvRef) -> Result<Option<LoadedEnvironment>, SourceError> {
            let key = reference.owner_and_name();
            if self.label == "broken" {
                return Err(SourceError::NoGenerations {
                    environment: key,
                    dir: std::path::PathBuf::from("/broken"),
                });
            }
            Ok(self
                .environments
                .get(&key)
                .map(|(text, lock)| LoadedEnvironment {
                    reference: reference.clone(),
                    generation: 4,
                    location: format!("/{}/{key}/4", self.label),
                    manifest_toml: text.clone(),
                    manifest_lock: lock.clone(),
                }))
        }
    }

    fn web_manifest() -> String {
        format!(
            r#"
            version = 1
            [install]
            hello.store-path = "{HELLO}"
            curl = {{ store-path = "{CURL}", priority = 1 }}
            bash = {{ store-path = "{BASH}", systems = ["aarch64-linux"] }}
            hello-again.store-path = "{HELLO}"
            [vars]
            APP = "echo"
            HOME_DIR = "/srv/${{APP}}"
            "#
        )
    }

    fn reference(text: &str) -> EnvRef {
        EnvRef::parse(text).unwrap()
    }

    fn package(install_id: &str, store_path: &str, priority: u32) -> ResolvedPackage {
        ResolvedPackage {
            install_id: install_id.into(),
            priority,
            outputs: vec![ResolvedOutput {
                name: "out".into(),
                store_path: StorePath::parse(store_path).unwrap(),
                to_install: true,
            }],
            flake: None,
        }
    }

    fn error_of(sources: &[Box<dyn EnvironmentSource>], text: &str) -> String {
        resolve(sources, &reference(text), "x86_64-linux")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn resolves_packages_for_the_system_in_priority_order() {
        let manifest = web_manifest();
        let sources: Vec<Box<dyn EnvironmentSource>> =
            vec![FakeSource::new("a", &[("acme/web", &manifest)])];
        let resolved = resolve(&sources, &reference("acme/web"), "x86_64-linux").unwrap();
        assert_eq!(resolved.generation, 4);
        assert_eq!(resolved.display_name(), "acme/web:4");
        assert_eq!(
            resolved.packages,
            vec![
                package("curl", CURL, 1),
                package("hello", HELLO, 5),
                package("hello-again", HELLO, 5),
            ]
        );
        assert_eq!(
            resolved.store_paths(),
            vec![
                StorePath::parse(CURL).unwrap(),
                StorePath::parse(HELLO).unwrap()
            ]
        );
        assert_eq!(
            resolved.vars,
            vec![
                ("APP".to_string(), "echo".to_string()),
                ("HOME_DIR".to_string(), "/srv/echo".to_string())
            ]
        );
        assert_eq!(resolved.manifest_lock, None);
        assert_eq!(resolved.lock_digest, None);
        assert!(!resolved.needs_activation());
        assert_eq!(resolved.containerize, ContainerizeConfig::default());
        assert_eq!(resolved.activate_mode, None);
    }

    #[test]
    fn resolves_the_whole_flox_fixture() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::locked(
            "a",
            "acme/web",
            FIXTURE_MANIFEST,
            FIXTURE_LOCK,
        )];
        let resolved = resolve(&sources, &reference("acme/web"), "x86_64-linux").unwrap();
        let ids: Vec<&str> = resolved
            .packages
            .iter()
            .map(|package| package.install_id.as_str())
            .collect();
        assert_eq!(ids, vec!["bash", "jq", "curl", "hello", "cuda_cudart"]);
        // 1 + 5 + 5 + 1 + 4 realised outputs, all distinct.
        let paths = resolved.store_paths();
        assert_eq!(paths.len(), 16);
        assert_eq!(paths[0].name(), "bash-interactive-5.2p37");
        assert_eq!(paths[1].name(), "jq-1.7.1-bin");
        assert!(paths.iter().all(|path| !path.name().ends_with("-stubs")));
        assert_eq!(
            resolved.vars,
            vec![
                ("GREETING".to_string(), "hello".to_string()),
                ("MESSAGE".to_string(), "hello from flox".to_string())
            ]
        );
        assert_eq!(
            resolved.hook_on_activate.as_deref(),
            Some("  export HOOK_RAN=1\n")
        );
        assert_eq!(
            resolved.profile.bash_scripts(),
            vec!["  echo \"common profile\"\n", "  set -o vi\n"]
        );
        assert!(resolved.needs_activation());
        assert_eq!(
            resolved.containerize,
            ContainerizeConfig {
                cmd: Some(vec!["curl".into(), "--version".into()]),
                working_dir: Some("/srv".into()),
                user: Some("1000:1000".into()),
            }
        );
        assert_eq!(resolved.activate_mode, Some(ActivateMode::Run));
        assert_eq!(resolved.manifest_lock.as_deref(), Some(FIXTURE_LOCK));
        assert_eq!(
            resolved.lock_digest,
            Some(<[u8; 32]>::from(Sha256::digest(FIXTURE_LOCK)))
        );
    }

    #[test]
    fn needs_activation_when_a_hook_or_bash_profile_says_something() {
        let mut env = ResolvedEnv {
            reference: reference("acme/web"),
            generation: 1,
            packages: Vec::new(),
            vars: Vec::new(),
            hook_on_activate: Some(" \n".into()),
            profile: Profile {
                zsh: Some("bindkey -v".into()),
                ..Profile::default()
            },
            containerize: ContainerizeConfig::default(),
            activate_mode: None,
            included: vec![],
            warnings: vec![],
            manifest_lock: None,
            lock_digest: None,
        };
        assert!(!env.needs_activation());
        env.profile.bash = Some("set -o vi".into());
        assert!(env.needs_activation());
        env.profile.bash = None;
        env.hook_on_activate = Some("export A=1".into());
        assert!(env.needs_activation());
    }

    #[test]
    fn the_first_source_with_the_environment_wins() {
        let manifest = web_manifest();
        let empty = "version = 1";
        let first = FakeSource::new("first", &[("acme/api", empty)]);
        let second = FakeSource::new("second", &[("acme/web", &manifest)]);
        let third = FakeSource::new("third", &[("acme/web", empty)]);
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![first, second, third];
        let resolved = resolve(&sources, &reference("acme/web:4"), "aarch64-linux").unwrap();
        assert_eq!(resolved.packages.len(), 4);
        assert_eq!(resolved.reference, reference("acme/web:4"));
    }

    #[test]
    fn not_found_lists_the_sources_searched() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![
            FakeSource::new("a", &[]),
            Box::new(crate::DirSource::new("/nonexistent/nixlet/environments")),
        ];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" not found (searched: fake a, dir \
             /nonexistent/nixlet/environments)"
        );
        assert_eq!(
            error_of(&[], "acme/web:2"),
            "environment \"acme/web:2\" not found (searched: no sources configured)"
        );
    }

    #[test]
    fn a_failing_source_stops_the_search() {
        let manifest = web_manifest();
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![
            FakeSource::new("broken", &[]),
            FakeSource::new("b", &[("acme/web", &manifest)]),
        ];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\": fake broken: environment \"acme/web\" has no \
             generations: \"/broken\" has no numbered directory"
        );
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_manifest_file() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::new(
            "a",
            &[("acme/web", "version = 1\n[hook]\non-activat = \"x\"")],
        )];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" generation 4: invalid manifest \
             \"/a/acme/web/4/manifest.toml\": unknown key \"hook.on-activat\""
        );
    }

    #[test]
    fn an_invalid_lock_names_the_lock_file() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::locked(
            "a",
            "acme/web",
            "version = 1",
            b"{\"lockfile-version\": 0}",
        )];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" generation 4: invalid manifest.lock \
             \"/a/acme/web/4/manifest.lock\": is \"lockfile-version\": 0, written by flox before \
             1.0; its packages have no store paths, and flox itself no longer reads it: re-lock \
             the environment with flox 1.x (set `version = 1` in manifest.toml, then `flox edit` \
             or `flox activate` writes a \"lockfile-version\": 1 lock)"
        );
    }

    #[test]
    fn a_stale_lock_is_refused_naming_the_generation_and_the_install_ids() {
        let manifest = format!("{FIXTURE_MANIFEST}\n[install.wget]\npkg-path = \"wget\"\n")
            .replace("[install]\n", "[install]\nripgrep.pkg-path = \"ripgrep\"\n");
        let sources: Vec<Box<dyn EnvironmentSource>> =
            vec![FakeSource::locked("a", "acme/web", &manifest, FIXTURE_LOCK)];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" generation 4 at \"/a/acme/web/4\": manifest.toml installs \
             install ids \"ripgrep\", \"wget\" that manifest.lock does not lock: the lock is \
             older than the manifest. Re-lock the environment with the flox CLI (`flox edit`, or \
             `flox activate` in the project directory) and publish both files again"
        );
    }

    #[test]
    fn what_runs_is_what_was_locked_with_a_warning_when_the_manifest_differs() {
        let manifest = FIXTURE_MANIFEST
            .replace("GREETING = \"hello\"", "GREETING = \"bonjour\"")
            .replace(
                "on-activate = \"\"\"",
                "on-activate = \"\"\"\n  echo changed",
            );
        let sources: Vec<Box<dyn EnvironmentSource>> =
            vec![FakeSource::locked("a", "acme/web", &manifest, FIXTURE_LOCK)];
        let resolved = resolve(&sources, &reference("acme/web"), "x86_64-linux").unwrap();
        assert_eq!(resolved.vars[0], ("GREETING".into(), "hello".into()));
        assert_eq!(
            resolved.hook_on_activate.as_deref(),
            Some("  export HOOK_RAN=1\n")
        );
        assert_eq!(
            resolved.warnings,
            vec![
                "manifest.toml differs from the manifest manifest.lock was made from at \
                 \"hook.on-activate\" (\"  echo changed\\n  export HOOK_RAN=1\\n\" in \
                 manifest.toml, \"  export HOOK_RAN=1\\n\" in the lock); nixlet runs what was \
                 locked"
            ]
        );
    }

    #[test]
    fn a_cause_is_printed_once_whoever_prints_the_chain() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::new(
            "a",
            &[("acme/web", "schema-version = \"2.0.0\"")],
        )];
        let error = resolve(&sources, &reference("acme/web"), "x86_64-linux").unwrap_err();
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            chain.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        assert_eq!(
            chain,
            "environment \"acme/web\" generation 4: invalid manifest \
             \"/a/acme/web/4/manifest.toml\": \"schema-version\" \"2.0.0\" is not supported; \
             nixlet reads `version = 1` and \"schema-version\" 1.10.0, 1.11.0, 1.12.0, 1.13.0, \
             1.14.0, 1.15.0, 1.16.0, 1.17.0, 1.18.0, 1.19.0 (a newer flox wrote this manifest: \
             write it with an older schema, or upgrade nixlet)"
        );
    }

    #[test]
    fn a_missing_lock_entry_names_install_id_system_and_generation() {
        let lock = String::from_utf8(FIXTURE_LOCK.to_vec()).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&lock).unwrap();
        value["packages"]
            .as_array_mut()
            .unwrap()
            .retain(|entry| !(entry["install_id"] == "hello" && entry["system"] == "x86_64-linux"));
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::locked(
            "a",
            "acme/web",
            FIXTURE_MANIFEST,
            value.to_string().as_bytes(),
        )];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" generation 4 at \"/a/acme/web/4\": manifest.lock has no \
             entry for install id \"hello\" on system \"x86_64-linux\" (it is locked for \
             \"aarch64-darwin\", \"aarch64-linux\", \"x86_64-darwin\"): re-lock the environment \
             for \"x86_64-linux\" with the flox CLI (`flox upgrade`, or add it to \
             `options.systems` with `flox edit`)"
        );
    }

    #[test]
    fn a_vars_cycle_names_the_reference() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::new(
            "a",
            &[(
                "acme/web",
                "version = 1\n[vars]\nA = \"${B}\"\nB = \"${A}\"",
            )],
        )];
        assert_eq!(
            error_of(&sources, "acme/web"),
            "environment \"acme/web\" generation 4: [vars] reference each other in a cycle: \
             \"A\" -> \"B\" -> \"A\""
        );
    }

    #[test]
    fn resolves_from_a_dir_source() {
        let root = tempfile::tempdir().unwrap();
        let generation = root.path().join("acme/web/3");
        std::fs::create_dir_all(&generation).unwrap();
        std::fs::write(generation.join("manifest.toml"), web_manifest()).unwrap();
        let sources: Vec<Box<dyn EnvironmentSource>> =
            vec![Box::new(crate::DirSource::new(root.path()))];
        let resolved = resolve(&sources, &reference("acme/web"), "aarch64-linux").unwrap();
        assert_eq!(resolved.display_name(), "acme/web:3");
        assert_eq!(resolved.store_paths().len(), 3);
    }
}
