//! From a reference to what a container needs: the store paths of one generation of an
//! environment on this node's system, and its expanded variables.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::manifest::{Manifest, ManifestError};
use crate::reference::EnvRef;
use crate::source::{EnvironmentSource, SourceError};
use crate::store_path::StorePath;
use crate::vars::{expand_vars, VarsError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPackage {
    pub install_id: String,
    pub store_path: StorePath,
    pub priority: u32,
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
}

impl ResolvedEnv {
    /// Each package's store path once, in package order.
    pub fn store_paths(&self) -> Vec<StorePath> {
        let mut seen = HashSet::new();
        self.packages
            .iter()
            .filter(|package| seen.insert(&package.store_path))
            .map(|package| package.store_path.clone())
            .collect()
    }

    /// `owner/name:N` with the generation actually resolved, whatever the selector was.
    pub fn display_name(&self) -> String {
        format!("{}:{}", self.reference.owner_and_name(), self.generation)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("environment {reference:?} not found (searched: {})", searched_list(.searched))]
    NotFound {
        reference: String,
        /// The sources asked, as they describe themselves.
        searched: Vec<String>,
    },
    #[error("environment {reference:?}: {source_name}: {source}")]
    Source {
        reference: String,
        source_name: String,
        #[source]
        source: SourceError,
    },
    #[error(
        "environment {reference:?} generation {generation}: invalid manifest {path:?}: {source}"
    )]
    InvalidManifest {
        reference: String,
        generation: u64,
        path: PathBuf,
        /// Boxed because manifest errors are large and resolving is on the happy path.
        #[source]
        source: Box<ManifestError>,
    },
    #[error("environment {reference:?} generation {generation}: {source}")]
    Vars {
        reference: String,
        generation: u64,
        #[source]
        source: VarsError,
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
/// A source that has the environment but fails to load it ends the search: falling through to
/// the next source could silently run a different environment under the same name.
pub fn resolve(
    sources: &[Box<dyn EnvironmentSource>],
    reference: &EnvRef,
    system: &str,
) -> Result<ResolvedEnv, ResolveError> {
    let mut loaded = None;
    for source in sources {
        let found = source
            .load(reference)
            .map_err(|error| ResolveError::Source {
                reference: reference.to_string(),
                source_name: source.describe(),
                source: error,
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

    let manifest =
        Manifest::parse(&loaded.manifest_toml).map_err(|source| ResolveError::InvalidManifest {
            reference: reference.to_string(),
            generation: loaded.generation,
            path: loaded.manifest_path.clone(),
            source: Box::new(source),
        })?;
    let vars = expand_vars(&manifest.vars).map_err(|source| ResolveError::Vars {
        reference: reference.to_string(),
        generation: loaded.generation,
        source,
    })?;

    let mut packages: Vec<ResolvedPackage> = manifest
        .install
        .into_iter()
        .filter(|(_, descriptor)| descriptor.applies_to(system))
        .map(|(install_id, descriptor)| ResolvedPackage {
            install_id,
            store_path: descriptor.store_path,
            priority: descriptor.priority,
        })
        .collect();
    packages.sort_by(|a, b| (a.priority, &a.install_id).cmp(&(b.priority, &b.install_id)));

    Ok(ResolvedEnv {
        reference: reference.clone(),
        generation: loaded.generation,
        packages,
        vars,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::source::LoadedEnvironment;

    const HELLO: &str = "/nix/store/0c0ml8pl0gbmd5v1gqs9jz7s79kq2x36-hello-2.12.1";
    const CURL: &str = "/nix/store/1vabdxmxl9pdbzl4kvxflvzs4qhyapq6-curl-8.6.0-bin";
    const BASH: &str = "/nix/store/4bj2kxdm1462fzcc2i2s4dn33g2angcc-bash-5.2p26";

    /// Answers from a fixed table keyed by `owner/name`, always as generation 4; the one
    /// labelled "broken" fails every load.
    struct FakeSource {
        label: &'static str,
        manifests: HashMap<String, String>,
    }

    impl FakeSource {
        fn new(label: &'static str, manifests: &[(&str, &str)]) -> Box<FakeSource> {
            Box::new(FakeSource {
                label,
                manifests: manifests
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
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
                    dir: PathBuf::from("/broken"),
                });
            }
            Ok(self.manifests.get(&key).map(|text| LoadedEnvironment {
                reference: reference.clone(),
                generation: 4,
                manifest_path: PathBuf::from(format!("/{}/{key}/4/manifest.toml", self.label)),
                manifest_toml: text.clone(),
                manifest_lock: None,
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
            store_path: StorePath::parse(store_path).unwrap(),
            priority,
        }
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
            resolve(&sources, &reference("acme/web"), "x86_64-linux")
                .unwrap_err()
                .to_string(),
            "environment \"acme/web\" not found (searched: fake a, dir \
             /nonexistent/nixlet/environments)"
        );
        assert_eq!(
            resolve(&[], &reference("acme/web:2"), "x86_64-linux")
                .unwrap_err()
                .to_string(),
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
            resolve(&sources, &reference("acme/web"), "x86_64-linux")
                .unwrap_err()
                .to_string(),
            "environment \"acme/web\": fake broken: environment \"acme/web\" has no \
             generations: \"/broken\" has no numbered directory"
        );
    }

    #[test]
    fn an_invalid_manifest_names_reference_generation_and_path() {
        let sources: Vec<Box<dyn EnvironmentSource>> = vec![FakeSource::new(
            "a",
            &[("acme/web", "version = 1\n[hook]\non-activate = \"x\"")],
        )];
        assert_eq!(
            resolve(&sources, &reference("acme/web"), "x86_64-linux")
                .unwrap_err()
                .to_string(),
            "environment \"acme/web\" generation 4: invalid manifest \
             \"/a/acme/web/4/manifest.toml\": table [hook] is not supported yet"
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
            resolve(&sources, &reference("acme/web"), "x86_64-linux")
                .unwrap_err()
                .to_string(),
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
