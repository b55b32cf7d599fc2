//! Validation against the official CycloneDX 1.5 JSON schema (vendored under
//! `tests/fixtures/cyclonedx/`, see its README), offline: the two schemas it references are
//! registered under the URIs its `$ref`s resolve to.

use serde_json::Value;

const BOM_1_5: &str = include_str!("../fixtures/cyclonedx/bom-1.5.schema.json");
const SPDX: &str = include_str!("../fixtures/cyclonedx/spdx.schema.json");
const JSF_0_82: &str = include_str!("../fixtures/cyclonedx/jsf-0.82.schema.json");

/// Every violation, one per line; empty when `document` is a valid CycloneDX 1.5 BOM.
pub fn violations(document: &Value) -> Vec<String> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).expect("vendored schema is json");
    let registry = jsonschema::Registry::new()
        .add("http://cyclonedx.org/schema/spdx.schema.json", parse(SPDX))
        .expect("register spdx schema")
        .add(
            "http://cyclonedx.org/schema/jsf-0.82.schema.json",
            parse(JSF_0_82),
        )
        .expect("register jsf schema")
        .prepare()
        .expect("prepare schema registry");
    let validator = jsonschema::options()
        .offline()
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&parse(BOM_1_5))
        .expect("the CycloneDX 1.5 schema compiles");
    validator
        .iter_errors(document)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

pub fn assert_valid(document: &Value) {
    let violations = violations(document);
    assert!(
        violations.is_empty(),
        "not a valid CycloneDX 1.5 document:\n{}",
        violations.join("\n")
    );
}
