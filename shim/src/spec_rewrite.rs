//! The rewrite of a container's OCI runtime spec (`config.json`) for a nixlet environment.
//!
//! The spec is handled as JSON rather than as `oci_spec` types on purpose: a round trip through
//! typed structs would drop or default every field that this version of the types does not know
//! (containerd and runc move faster than the bindings), and runc must get back exactly what
//! containerd wrote, plus nixlet's additions.

use nixlet_manifest::StorePath;
use serde_json::{json, Map, Value};

use crate::env_overlay::EnvOverlay;

/// Read-only and without device nodes or setuid: a store path is data and programs, never a way
/// to gain privilege. `rbind` so that anything mounted below a store path comes along.
pub const STORE_MOUNT_OPTIONS: [&str; 4] = ["rbind", "ro", "nosuid", "nodev"];

/// Annotation nixlet adds to the spec it rewrote, naming the environment generation used.
pub const RESOLVED_ANNOTATION: &str = "nixlet.dev/resolved";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error("config.json field {field:?} has the wrong type (expected {expected})")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

/// Adds one read-only bind mount per closure path, applies the environment overlay to the
/// process, and records which environment generation was used.
pub fn rewrite_spec(
    spec: &mut Value,
    overlay: &EnvOverlay,
    closure: &[StorePath],
    resolved: &str,
) -> Result<(), RewriteError> {
    let root = spec.as_object_mut().ok_or(RewriteError::NotAnObject)?;

    let mounts = array_field(root, "mounts")?;
    for path in closure {
        let path = path.to_string();
        mounts.push(json!({
            "destination": path,
            "type": "bind",
            "source": path,
            "options": STORE_MOUNT_OPTIONS,
        }));
    }

    let process = object_field(root, "process")?;
    rewrite_process(process, overlay)?;

    let annotations = object_field(root, "annotations")?;
    annotations.insert(RESOLVED_ANNOTATION.to_string(), Value::from(resolved));
    Ok(())
}

/// Applies the overlay to one OCI `Process` object (the container's, or an exec's).
pub fn rewrite_process(
    process: &mut Map<String, Value>,
    overlay: &EnvOverlay,
) -> Result<(), RewriteError> {
    let env = match process.get("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or(RewriteError::WrongType {
                        field: "process.env",
                        expected: "an array of strings",
                    })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RewriteError::WrongType {
                field: "process.env",
                expected: "an array of strings",
            })
        }
    };
    process.insert("env".to_string(), json!(overlay.apply(&env)));
    Ok(())
}

fn array_field<'a>(
    object: &'a mut Map<String, Value>,
    field: &'static str,
) -> Result<&'a mut Vec<Value>, RewriteError> {
    let value = object.entry(field).or_insert_with(|| json!([]));
    if value.is_null() {
        *value = json!([]);
    }
    value.as_array_mut().ok_or(RewriteError::WrongType {
        field,
        expected: "an array",
    })
}

fn object_field<'a>(
    object: &'a mut Map<String, Value>,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, RewriteError> {
    let value = object.entry(field).or_insert_with(|| json!({}));
    if value.is_null() {
        *value = json!({});
    }
    value.as_object_mut().ok_or(RewriteError::WrongType {
        field,
        expected: "an object",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12";
    const GLIBC: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-glibc-2.38";

    fn overlay() -> EnvOverlay {
        EnvOverlay {
            path_prefix: vec![format!("{HELLO}/bin")],
            vars: vec![("GREETING".into(), "hello from nix".into())],
        }
    }

    fn closure() -> Vec<StorePath> {
        vec![
            StorePath::parse(HELLO).unwrap(),
            StorePath::parse(GLIBC).unwrap(),
        ]
    }

    /// The shape containerd's CRI plugin writes, trimmed, with a field no binding knows.
    fn cri_spec() -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": ["hello"],
                "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=web"],
                "cwd": "/"
            },
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "annotations": {"io.kubernetes.cri.container-type": "container"},
            "linux": {"namespaces": [{"type": "pid"}]},
            "futureField": {"kept": true}
        })
    }

    #[test]
    fn adds_one_read_only_bind_per_closure_path_after_the_existing_mounts() {
        let mut spec = cri_spec();
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3").unwrap();
        assert_eq!(
            spec["mounts"],
            json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": HELLO, "type": "bind", "source": HELLO,
                 "options": ["rbind", "ro", "nosuid", "nodev"]},
                {"destination": GLIBC, "type": "bind", "source": GLIBC,
                 "options": ["rbind", "ro", "nosuid", "nodev"]},
            ])
        );
    }

    #[test]
    fn sets_path_and_vars_and_records_the_generation() {
        let mut spec = cri_spec();
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3").unwrap();
        assert_eq!(
            spec["process"]["env"],
            json!([
                format!("PATH={HELLO}/bin:/usr/local/bin:/usr/bin:/bin"),
                "HOSTNAME=web",
                "GREETING=hello from nix",
            ])
        );
        assert_eq!(spec["annotations"][RESOLVED_ANNOTATION], "acme/web:3");
    }

    #[test]
    fn leaves_every_other_field_exactly_as_it_was() {
        let mut spec = cri_spec();
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3").unwrap();
        let original = cri_spec();
        for field in ["ociVersion", "root", "linux", "futureField"] {
            assert_eq!(spec[field], original[field], "{field}");
        }
        assert_eq!(spec["process"]["args"], original["process"]["args"]);
        assert_eq!(spec["process"]["user"], original["process"]["user"]);
    }

    #[test]
    fn works_on_a_minimal_spec_without_mounts_env_or_annotations() {
        let mut spec = json!({"process": {"args": ["hello"]}, "mounts": null});
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:1").unwrap();
        assert_eq!(spec["mounts"].as_array().unwrap().len(), 2);
        assert_eq!(spec["process"]["env"][1], "GREETING=hello from nix");
    }

    #[test]
    fn malformed_specs_are_errors_not_panics() {
        let mut spec = json!([]);
        assert_eq!(
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1"),
            Err(RewriteError::NotAnObject)
        );
        let mut spec = json!({"process": {"env": "PATH=/bin"}});
        assert_eq!(
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1")
                .unwrap_err()
                .to_string(),
            "config.json field \"process.env\" has the wrong type (expected an array of strings)"
        );
    }
}
