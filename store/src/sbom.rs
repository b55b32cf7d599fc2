//! The bill of materials of an environment: a CycloneDX 1.5 JSON document with one component
//! per store path of the closure and the dependency graph of their references.
//!
//! Pure: it takes plain values and returns bytes. The same closure always gives the same bytes,
//! which matters because the document is part of the environment view, a content-addressed
//! store path: a timestamp or a random serial number would give every node and every Create a
//! different view. So there is no timestamp, and the serial number is a UUID (version 5) derived
//! from the rest of the document, so that two SBOMs share a serial number exactly when they say
//! the same thing.

use std::collections::BTreeSet;

use cyclonedx_bom::models::bom::{Bom, SpecVersion, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::Tools;
use cyclonedx_bom::prelude::{NormalizedString, Purl};
use cyclonedx_bom::validation::Validate;
use nixlet_manifest::StorePath;
use sha2::{Digest, Sha256};

use crate::drv_name::DrvName;
use crate::path_info::PathInfo;

/// Where the view carries the document (`$NIXLET_ENV/share/nixlet/sbom.cdx.json`).
pub const SBOM_VIEW_PATH: &str = "share/nixlet/sbom.cdx.json";

/// Property names (CycloneDX property taxonomy syntax: `namespace:name`).
pub const PROPERTY_STORE_PATH: &str = "nix:store_path";
pub const PROPERTY_NAR_SIZE: &str = "nix:nar_size";
pub const PROPERTY_NAR_HASH: &str = "nix:nar_hash";
pub const PROPERTY_ENVIRONMENT: &str = "nixlet:environment";
pub const PROPERTY_LOCK_SHA256: &str = "nixlet:manifest_lock_sha256";
pub const PROPERTY_PINNED_REFERENCE: &str = "nixlet:pinned_reference";

/// The namespace of the serial number's UUID v5 (itself `uuid5(NAMESPACE_URL,
/// "https://nixlet.dev/sbom")`, written out so that it never changes by accident).
const SERIAL_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3f1d_6c52_9e0b_5a77_8c21_4d9e_0b6a_7f13);

/// The environment the SBOM describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomSubject {
    pub owner: String,
    pub name: String,
    pub generation: u64,
    /// sha256 of the generation's `manifest.lock` bytes, when it has one.
    pub lock_sha256: Option<[u8; 32]>,
    /// The environment's own outputs (what the closure was computed from).
    pub roots: Vec<StorePath>,
}

impl SbomSubject {
    /// `owner/name:N`, as `NIXLET_ENVIRONMENT` names it in the container.
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.owner, self.name, self.generation)
    }
}

/// One store path of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPath {
    pub info: PathInfo,
    /// It ships programs (`bin/`, or is itself an executable): an `application` component,
    /// otherwise a `library`.
    pub application: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("sbom of {environment}: {path} is referenced but not in the closure given")]
    MissingReference {
        environment: String,
        path: StorePath,
    },
    #[error("sbom of {environment}: root {path} is not in the closure given")]
    MissingRoot {
        environment: String,
        path: StorePath,
    },
    #[error(
        "sbom of {environment}: the document does not validate as CycloneDX 1.5 (fields: {fields})"
    )]
    Invalid { environment: String, fields: String },
    #[error("sbom of {environment}: write json: {message}")]
    Write {
        environment: String,
        message: String,
    },
}

/// The CycloneDX 1.5 JSON document (pretty-printed, ending in a newline) for `subject` whose
/// closure is `closure` (every member once, in any order).
pub fn closure_sbom(subject: &SbomSubject, closure: &[SbomPath]) -> Result<Vec<u8>, SbomError> {
    let environment = subject.reference();
    let mut paths: Vec<&SbomPath> = closure.iter().collect();
    paths.sort_by(|a, b| a.info.path.cmp(&b.info.path));
    paths.dedup_by(|a, b| a.info.path == b.info.path);
    let members: BTreeSet<&StorePath> = paths.iter().map(|p| &p.info.path).collect();
    for root in &subject.roots {
        if !members.contains(root) {
            return Err(SbomError::MissingRoot {
                environment,
                path: root.clone(),
            });
        }
    }
    let mut dependencies = vec![Dependency {
        dependency_ref: environment.clone(),
        dependencies: sorted_unique(subject.roots.iter()),
    }];
    for path in &paths {
        if let Some(missing) = path.info.references.iter().find(|r| !members.contains(r)) {
            return Err(SbomError::MissingReference {
                environment,
                path: missing.clone(),
            });
        }
        // A self-reference is not an edge (nix-store -q --graph leaves it out too).
        dependencies.push(Dependency {
            dependency_ref: path.info.path.to_string(),
            dependencies: sorted_unique(
                path.info
                    .references
                    .iter()
                    .filter(|r| **r != path.info.path),
            ),
        });
    }

    let mut bom = Bom {
        version: 1,
        serial_number: None,
        metadata: Some(metadata(subject)),
        components: Some(Components(paths.iter().map(|p| component(p)).collect())),
        dependencies: Some(Dependencies(dependencies)),
        spec_version: SpecVersion::V1_5,
        ..Bom::default()
    };
    let validation = bom.validate_version(SpecVersion::V1_5);
    if validation.has_errors() {
        let fields: Vec<String> = validation.errors().map(|(field, _)| field).collect();
        return Err(SbomError::Invalid {
            environment,
            fields: fields.join(", "),
        });
    }
    let unnumbered = write_json(bom.clone(), &environment)?;
    let digest = Sha256::digest(&unnumbered);
    let serial = uuid::Uuid::new_v5(&SERIAL_NAMESPACE, hex::encode(digest).as_bytes());
    bom.serial_number = Some(UrnUuid::from(serial));
    write_json(bom, &environment)
}

fn write_json(bom: Bom, environment: &str) -> Result<Vec<u8>, SbomError> {
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out)
        .map_err(|error| SbomError::Write {
            environment: environment.to_string(),
            message: error.to_string(),
        })?;
    out.push(b'\n');
    Ok(out)
}

fn metadata(subject: &SbomSubject) -> Metadata {
    let environment = subject.reference();
    let mut properties = vec![Property::new(PROPERTY_ENVIRONMENT, &environment)];
    if let Some(digest) = subject.lock_sha256 {
        let digest = hex::encode(digest);
        properties.push(Property::new(
            PROPERTY_PINNED_REFERENCE,
            &format!("{}/{}@sha256:{digest}", subject.owner, subject.name),
        ));
        properties.push(Property::new(PROPERTY_LOCK_SHA256, &digest));
    }
    let mut component = Component::new(
        Classification::Application,
        &subject.name,
        &subject.generation.to_string(),
        Some(environment),
    );
    component.group = Some(NormalizedString::new(&subject.owner));
    component.description = Some(NormalizedString::new(
        "nixlet environment: every store path a container of this generation mounts",
    ));
    component.properties = Some(Properties(properties.clone()));
    Metadata {
        // No timestamp: see the module comment.
        timestamp: None,
        tools: Some(Tools::Object {
            services: None,
            components: Some(Components(vec![Component::new(
                Classification::Application,
                "nixlet",
                env!("CARGO_PKG_VERSION"),
                None,
            )])),
        }),
        component: Some(component),
        properties: Some(Properties(properties)),
        ..Metadata::default()
    }
}

fn component(path: &SbomPath) -> Component {
    let info = &path.info;
    let parsed = DrvName::parse(info.path.name());
    let classification = if path.application {
        Classification::Application
    } else {
        Classification::Library
    };
    let mut component = Component::new(
        classification,
        parsed.name,
        parsed.version,
        Some(info.path.to_string()),
    );
    if parsed.version.is_empty() {
        component.version = None;
    } else {
        // Only a versioned name is a package in the purl sense; `source` or a single file is not.
        component.purl = Purl::new("nix", parsed.name, parsed.version).ok();
    }
    component.hashes = Some(Hashes(vec![Hash {
        alg: HashAlgorithm::SHA_256,
        content: HashValue(info.nar_hash_hex()),
    }]));
    component.properties = Some(Properties(vec![
        Property::new(PROPERTY_STORE_PATH, &info.path.to_string()),
        Property::new(PROPERTY_NAR_HASH, &info.nar_hash_nix32()),
        Property::new(PROPERTY_NAR_SIZE, &info.nar_size.to_string()),
    ]));
    component
}

fn sorted_unique<'a>(paths: impl Iterator<Item = &'a StorePath>) -> Vec<String> {
    paths
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(StorePath::to_string)
        .collect()
}

/// The official schema check, shared with the integration tests.
#[cfg(test)]
#[path = "../tests/support/cyclonedx_schema.rs"]
mod schema_support;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const HELLO: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12.1";
    const GLIBC: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-glibc-2.38-44";
    const SOURCE: &str = "/nix/store/2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-source";

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    fn path(s: &str, refs: &[&str], byte: u8, application: bool) -> SbomPath {
        SbomPath {
            info: PathInfo {
                path: p(s),
                nar_hash: [byte; 32],
                nar_size: 1000 + u64::from(byte),
                references: refs.iter().map(|r| p(r)).collect(),
            },
            application,
        }
    }

    fn subject() -> SbomSubject {
        SbomSubject {
            owner: "acme".into(),
            name: "web".into(),
            generation: 3,
            lock_sha256: Some([0xab; 32]),
            roots: vec![p(HELLO)],
        }
    }

    fn closure() -> Vec<SbomPath> {
        vec![
            path(HELLO, &[HELLO, GLIBC], 1, true),
            path(GLIBC, &[GLIBC], 2, false),
            path(SOURCE, &[], 3, false),
        ]
    }

    fn document(closure: &[SbomPath]) -> Value {
        serde_json::from_slice(&closure_sbom(&subject(), closure).unwrap()).unwrap()
    }

    #[test]
    fn one_component_per_path_named_by_parse_drv_name() {
        let doc = document(&closure());
        assert_eq!(doc["bomFormat"], "CycloneDX");
        assert_eq!(doc["specVersion"], "1.5");
        let components = doc["components"].as_array().unwrap();
        assert_eq!(components.len(), 3);
        let hello = components.iter().find(|c| c["bom-ref"] == HELLO).unwrap();
        assert_eq!(hello["type"], "application");
        assert_eq!(hello["name"], "hello");
        assert_eq!(hello["version"], "2.12.1");
        assert_eq!(hello["purl"], "pkg:nix/hello@2.12.1");
        assert_eq!(hello["hashes"][0]["alg"], "SHA-256");
        assert_eq!(hello["hashes"][0]["content"], "01".repeat(32));
        let properties = &hello["properties"];
        assert!(properties
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "nix:store_path", "value": HELLO})));
        assert!(properties
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "nix:nar_size", "value": "1001"})));
        let glibc = components.iter().find(|c| c["bom-ref"] == GLIBC).unwrap();
        assert_eq!(glibc["type"], "library");
        assert_eq!(glibc["version"], "2.38-44");
        let source = components.iter().find(|c| c["bom-ref"] == SOURCE).unwrap();
        assert_eq!(source["name"], "source");
        assert!(source.get("version").is_none());
        assert!(source.get("purl").is_none());
    }

    #[test]
    fn dependencies_follow_references_without_self_edges() {
        let doc = document(&closure());
        let deps: Vec<(String, Vec<String>)> = doc["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["ref"].as_str().unwrap().to_string(),
                    d["dependsOn"]
                        .as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            deps,
            vec![
                ("acme/web:3".to_string(), vec![HELLO.to_string()]),
                (HELLO.to_string(), vec![GLIBC.to_string()]),
                (GLIBC.to_string(), vec![]),
                (SOURCE.to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn metadata_names_the_environment_its_lock_and_the_tool() {
        let doc = document(&closure());
        let metadata = &doc["metadata"];
        assert!(metadata.get("timestamp").is_none());
        assert_eq!(metadata["component"]["bom-ref"], "acme/web:3");
        assert_eq!(metadata["component"]["group"], "acme");
        assert_eq!(metadata["component"]["name"], "web");
        assert_eq!(metadata["component"]["version"], "3");
        assert_eq!(metadata["tools"]["components"][0]["name"], "nixlet");
        let properties = metadata["properties"].as_array().unwrap();
        assert!(properties.contains(
            &serde_json::json!({"name": "nixlet:manifest_lock_sha256", "value": "ab".repeat(32)})
        ));
        assert!(properties
            .contains(&serde_json::json!({"name": "nixlet:environment", "value": "acme/web:3"})));
    }

    #[test]
    fn the_same_closure_gives_the_same_bytes_and_serial_whatever_the_order() {
        let mut reversed = closure();
        reversed.reverse();
        let a = closure_sbom(&subject(), &closure()).unwrap();
        let b = closure_sbom(&subject(), &reversed).unwrap();
        assert_eq!(a, b);
        let serial = document(&closure())["serialNumber"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(serial.starts_with("urn:uuid:"), "{serial}");
        assert_eq!(&serial[9 + 14..9 + 15], "5", "a version 5 UUID: {serial}");
        let mut other = closure();
        other[1].info.nar_size += 1;
        assert_ne!(document(&other)["serialNumber"].as_str().unwrap(), serial);
    }

    #[test]
    fn a_reference_outside_the_closure_is_an_error_naming_it() {
        let error = closure_sbom(&subject(), &closure()[..1]).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("sbom of acme/web:3: {GLIBC} is referenced but not in the closure given")
        );
    }

    #[test]
    fn validates_against_the_official_cyclonedx_1_5_schema() {
        let doc = document(&closure());
        super::schema_support::assert_valid(&doc);
        let mut no_lock = subject();
        no_lock.lock_sha256 = None;
        let bytes = closure_sbom(&no_lock, &closure()).unwrap();
        super::schema_support::assert_valid(&serde_json::from_slice(&bytes).unwrap());
    }

    #[test]
    fn the_schema_check_catches_what_cyclonedx_forbids() {
        let mut doc = document(&closure());
        doc["components"][0]["type"] = "package".into();
        doc["components"][1]["hashes"][0]["content"] = "not hex".into();
        doc["metadata"]["timestamp"] = "yesterday".into();
        let violations = super::schema_support::violations(&doc);
        assert_eq!(violations.len(), 3, "{violations:#?}");
    }
}
