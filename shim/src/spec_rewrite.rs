//! The rewrite of a container's OCI runtime spec (`config.json`) for a nixlet environment.
//!
//! The spec is handled as JSON rather than as `oci_spec` types on purpose: a round trip through
//! typed structs would drop or default every field that this version of the types does not know
//! (containerd and runc move faster than the bindings), and runc must get back exactly what
//! containerd wrote, plus nixlet's additions.

use std::path::PathBuf;

use nixlet_manifest::{StorePath, STORE_DIR};
use serde_json::{json, Map, Value};

use crate::activation::{wrap_argv, DEFAULT_COMMAND_SENTINEL};
use crate::env_overlay::EnvOverlay;

/// Read-only and without device nodes or setuid: a store path is data and programs, never a way
/// to gain privilege. `rbind` so that anything mounted below a store path comes along.
pub const STORE_MOUNT_OPTIONS: [&str; 4] = ["rbind", "ro", "nosuid", "nodev"];

/// How the closure appears in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMounts {
    /// The environment's store tree (a directory holding exactly the closure, see
    /// `nixlet_store::store_tree`) bound on `/nix/store`: one mount, whatever the closure size,
    /// and the rest of the host's store stays invisible as with per-path binds.
    Tree(PathBuf),
    /// One bind per closure path at its own path: the fallback when no tree can be built.
    PerPath(Vec<StorePath>),
}

impl StoreMounts {
    /// Mount entries this adds to the spec.
    pub fn count(&self) -> usize {
        match self {
            StoreMounts::Tree(_) => 1,
            StoreMounts::PerPath(paths) => paths.len(),
        }
    }
}

/// Annotation nixlet adds to the spec it rewrote, naming the environment generation used.
pub const RESOLVED_ANNOTATION: &str = "nixlet.dev/resolved";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error(
        "the container has no command: the pod sets none and the environment has no \
         [containerize.config] cmd"
    )]
    NoCommand,
    #[error("config.json field {field:?} has the wrong type (expected {expected})")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

/// What the container's process runs, beyond its environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandPlan {
    /// `[containerize.config] cmd`: run when the pod gives no command.
    pub default_cmd: Option<Vec<String>>,
    /// `(bash, view)`: run the command through the view's activation script under this bash.
    pub activation: Option<(String, String)>,
    /// `[containerize.config] working-dir`: used when the pod sets none (cwd `/`).
    pub working_dir: Option<String>,
}

/// Adds the closure's read-only bind mount(s), applies the environment overlay and the command
/// plan to the process, and records which environment generation was used.
pub fn rewrite_spec(
    spec: &mut Value,
    overlay: &EnvOverlay,
    store: &StoreMounts,
    resolved: &str,
    command: &CommandPlan,
) -> Result<(), RewriteError> {
    let root = spec.as_object_mut().ok_or(RewriteError::NotAnObject)?;

    let mounts = array_field(root, "mounts")?;
    let bind = |source: String, destination: String| {
        json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": STORE_MOUNT_OPTIONS,
        })
    };
    match store {
        StoreMounts::Tree(tree) => {
            mounts.push(bind(tree.display().to_string(), STORE_DIR.to_string()));
        }
        StoreMounts::PerPath(closure) => {
            for path in closure {
                mounts.push(bind(path.to_string(), path.to_string()));
            }
        }
    }

    let process = object_field(root, "process")?;
    rewrite_process(process, overlay)?;
    rewrite_command(process, command)?;

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

fn rewrite_command(
    process: &mut Map<String, Value>,
    command: &CommandPlan,
) -> Result<(), RewriteError> {
    let wrong = RewriteError::WrongType {
        field: "process.args",
        expected: "an array of strings",
    };
    let mut args: Vec<String> = match process.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or(wrong.clone()))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong),
    };
    if args.is_empty() || args == [DEFAULT_COMMAND_SENTINEL] {
        args = command.default_cmd.clone().ok_or(RewriteError::NoCommand)?;
    }
    if let Some((bash, view)) = &command.activation {
        args = wrap_argv(bash, view, &args);
    }
    process.insert("args".to_string(), json!(args));
    if let Some(dir) = &command.working_dir {
        let unset = matches!(
            process.get("cwd").and_then(Value::as_str),
            None | Some("" | "/")
        );
        if unset {
            process.insert("cwd".to_string(), Value::from(dir.as_str()));
        }
    }
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
    use crate::env_overlay::Prepend;

    const HELLO: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12";
    const GLIBC: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-glibc-2.38";

    fn overlay() -> EnvOverlay {
        EnvOverlay {
            prepend: vec![Prepend {
                name: "PATH".into(),
                dirs: vec![format!("{HELLO}/bin")],
                default: "/bin".into(),
            }],
            vars: vec![("GREETING".into(), "hello from nix".into())],
        }
    }

    fn plain() -> CommandPlan {
        CommandPlan::default()
    }

    fn closure() -> StoreMounts {
        StoreMounts::PerPath(vec![
            StorePath::parse(HELLO).unwrap(),
            StorePath::parse(GLIBC).unwrap(),
        ])
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
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3", &plain()).unwrap();
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
    fn a_store_tree_is_one_read_only_bind_on_the_store() {
        let mut spec = cri_spec();
        let tree = StoreMounts::Tree("/nix/var/nixlet/trees/0a1b2c3d".into());
        rewrite_spec(&mut spec, &overlay(), &tree, "acme/web:3", &plain()).unwrap();
        assert_eq!(
            spec["mounts"],
            json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/nix/store", "type": "bind",
                 "source": "/nix/var/nixlet/trees/0a1b2c3d",
                 "options": ["rbind", "ro", "nosuid", "nodev"]},
            ])
        );
        assert_eq!(tree.count(), 1);
        assert_eq!(closure().count(), 2);
    }

    #[test]
    fn sets_path_and_vars_and_records_the_generation() {
        let mut spec = cri_spec();
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3", &plain()).unwrap();
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
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:3", &plain()).unwrap();
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
        rewrite_spec(&mut spec, &overlay(), &closure(), "acme/web:1", &plain()).unwrap();
        assert_eq!(spec["mounts"].as_array().unwrap().len(), 2);
        assert_eq!(spec["process"]["env"][1], "GREETING=hello from nix");
    }

    #[test]
    fn no_command_takes_the_containerize_cmd_and_its_working_dir() {
        let plan = CommandPlan {
            default_cmd: Some(vec!["echoserver".into(), "--port".into(), "8080".into()]),
            activation: None,
            working_dir: Some("/srv".into()),
        };
        for args in [json!([]), json!([DEFAULT_COMMAND_SENTINEL]), Value::Null] {
            let mut spec = json!({"process": {"args": args, "cwd": "/"}});
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plan).unwrap();
            assert_eq!(
                spec["process"]["args"],
                json!(["echoserver", "--port", "8080"])
            );
            assert_eq!(spec["process"]["cwd"], "/srv");
        }
        let mut spec = json!({"process": {"args": ["sh"], "cwd": "/work"}});
        rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plan).unwrap();
        assert_eq!(spec["process"]["args"], json!(["sh"]));
        assert_eq!(spec["process"]["cwd"], "/work");
    }

    #[test]
    fn no_command_anywhere_is_an_error() {
        let mut spec = json!({"process": {"args": [DEFAULT_COMMAND_SENTINEL]}});
        assert_eq!(
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plain()),
            Err(RewriteError::NoCommand)
        );
    }

    #[test]
    fn activation_wraps_the_command_keeping_its_arguments() {
        let plan = CommandPlan {
            activation: Some((
                "/nix/store/b-bash/bin/bash".into(),
                "/nix/store/v-view".into(),
            )),
            ..CommandPlan::default()
        };
        let mut spec = json!({"process": {"args": ["printf", "%s", "a b", ""]}});
        rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plan).unwrap();
        assert_eq!(
            spec["process"]["args"],
            json!([
                "/nix/store/b-bash/bin/bash",
                "--noprofile",
                "--norc",
                "/nix/store/v-view/activate",
                "printf",
                "%s",
                "a b",
                ""
            ])
        );
    }

    #[test]
    fn malformed_specs_are_errors_not_panics() {
        let mut spec = json!([]);
        assert_eq!(
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plain()),
            Err(RewriteError::NotAnObject)
        );
        let mut spec = json!({"process": {"env": "PATH=/bin"}});
        assert_eq!(
            rewrite_spec(&mut spec, &overlay(), &closure(), "a/b:1", &plain())
                .unwrap_err()
                .to_string(),
            "config.json field \"process.env\" has the wrong type (expected an array of strings)"
        );
    }
}
