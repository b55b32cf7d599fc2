//! The annotation keys nixlet reads from a container's OCI spec, and the decision they make
//! for one container: leave it alone, or run it from which environment.
//!
//! containerd copies pod annotations into every container's spec, so the pod-level keys are
//! seen by every container of the pod; the CRI keys tell which container this one is.

use std::collections::{BTreeSet, HashMap};

use crate::activate_mode::ActivateMode;
use crate::reference::{quoted, EnvRef, ReferenceError};

pub const ENVIRONMENT: &str = "nixlet.dev/environment";
/// Followed by a container name: an environment for that container only.
pub const ENVIRONMENT_PREFIX: &str = "nixlet.dev/environment.";
pub const SKIP_CONTAINERS: &str = "nixlet.dev/skip-containers";
/// Flox's spelling of [`ENVIRONMENT`], same meaning.
pub const FLOX_ENVIRONMENT: &str = "flox.dev/environment";
/// Flox's spelling of [`ENVIRONMENT_PREFIX`], same meaning.
pub const FLOX_ENVIRONMENT_PREFIX: &str = "flox.dev/environment.";
/// Flox's spelling of [`SKIP_CONTAINERS`], same meaning.
pub const FLOX_SKIP_CONTAINERS: &str = "flox.dev/skip-containers";
/// `"a,b"`: containers whose `exec` processes are left as runc would run them (no environment
/// variables added), while the containers themselves still run in the environment: what a
/// GitLab runner needs to exec its job script in the build container with the image's own
/// environment (Flox documents it for that, flox.dev/docs/k8s/examples/gitlab-ci).
pub const SKIP_CONTAINERS_EXEC: &str = "nixlet.dev/skip-containers-exec";
/// Flox's spelling of [`SKIP_CONTAINERS_EXEC`], same meaning.
pub const FLOX_SKIP_CONTAINERS_EXEC: &str = "flox.dev/skip-containers-exec";
/// `"dev"` or `"run"`: the activation mode of every container of the pod, over the manifest's
/// `options.activate.mode`.
pub const ACTIVATE_MODE: &str = "nixlet.dev/activate-mode";
/// Flox's spelling of [`ACTIVATE_MODE`], same meaning.
pub const FLOX_ACTIVATE_MODE: &str = "flox.dev/activate-mode";
/// `"sandbox"` for the pause container, `"container"` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CRI_CONTAINER_TYPE_SANDBOX: &str = "sandbox";
pub const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";

/// What nixlet does with one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Pass the container through unchanged: a sandbox, or no environment applies.
    Untouched,
    /// Pass the container through unchanged because a skip list names it.
    Skipped { container: String },
    /// Run the container from this environment; `key` is the annotation that named it.
    Environment { key: String, reference: EnvRef },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error(
        "annotations {} ({}) and {} ({}) disagree; set only one of them",
        quoted(.nixlet_key),
        quoted(.nixlet_value),
        quoted(.flox_key),
        quoted(.flox_value)
    )]
    Conflict {
        nixlet_key: String,
        nixlet_value: String,
        flox_key: String,
        flox_value: String,
    },
    // The reference error is part of the message, so it is not also a `source`.
    #[error("annotation {}: {problem}", quoted(.key))]
    InvalidReference {
        key: String,
        problem: ReferenceError,
    },
    #[error(
        "annotation {} must be \"dev\" or \"run\", not {}",
        quoted(.key),
        quoted(.value)
    )]
    InvalidActivateMode { key: String, value: String },
}

/// Decides what to do with the container whose spec carries `annotations`.
///
/// A container named in a skip list is [`Selection::Skipped`] even when an environment key
/// (pod-level or its own) applies, and its environment keys are then not even validated: the
/// skip list is how an operator exempts a sidecar from a pod-wide environment, and "leave it
/// alone" is the safe reading of contradictory annotations.
pub fn select(annotations: &HashMap<String, String>) -> Result<Selection, AnnotationError> {
    let lookup = |key: &str| annotations.get(key).map(String::as_str);
    if lookup(CRI_CONTAINER_TYPE) == Some(CRI_CONTAINER_TYPE_SANDBOX) {
        return Ok(Selection::Untouched);
    }
    // `ctr run` sets no container name; then only pod-level keys can apply.
    let container = lookup(CRI_CONTAINER_NAME).filter(|name| !name.is_empty());

    if let Some(container) = container {
        if skip_list(annotations)?.contains(container) {
            return Ok(Selection::Skipped {
                container: container.to_string(),
            });
        }
        let own_keys = (
            format!("{ENVIRONMENT_PREFIX}{container}"),
            format!("{FLOX_ENVIRONMENT_PREFIX}{container}"),
        );
        if let Some(found) = one_of(annotations, &own_keys.0, &own_keys.1)? {
            return environment(found);
        }
    }
    match one_of(annotations, ENVIRONMENT, FLOX_ENVIRONMENT)? {
        Some(found) => environment(found),
        None => Ok(Selection::Untouched),
    }
}

/// The activation mode the pod's annotations ask for, if any.
pub fn activate_mode(
    annotations: &HashMap<String, String>,
) -> Result<Option<ActivateMode>, AnnotationError> {
    let Some((key, value)) = one_of(annotations, ACTIVATE_MODE, FLOX_ACTIVATE_MODE)? else {
        return Ok(None);
    };
    value
        .trim()
        .parse()
        .map(Some)
        .map_err(|()| AnnotationError::InvalidActivateMode {
            key: key.to_string(),
            value: value.to_string(),
        })
}

/// Whether the container these annotations belong to is named in the skip-exec list.
pub fn skips_exec(annotations: &HashMap<String, String>) -> Result<bool, AnnotationError> {
    let Some(container) = annotations
        .get(CRI_CONTAINER_NAME)
        .filter(|name| !name.is_empty())
    else {
        return Ok(false);
    };
    Ok(
        name_list(annotations, SKIP_CONTAINERS_EXEC, FLOX_SKIP_CONTAINERS_EXEC)?
            .contains(container.as_str()),
    )
}

/// The container names of the skip list, from whichever spelling is set.
fn skip_list(annotations: &HashMap<String, String>) -> Result<BTreeSet<&str>, AnnotationError> {
    name_list(annotations, SKIP_CONTAINERS, FLOX_SKIP_CONTAINERS)
}

/// A comma-separated list of container names under the nixlet key or its flox alias.
fn name_list<'a>(
    annotations: &'a HashMap<String, String>,
    nixlet_key: &str,
    flox_key: &str,
) -> Result<BTreeSet<&'a str>, AnnotationError> {
    let nixlet = annotations.get(nixlet_key).map(|v| parse_skip_list(v));
    let flox = annotations.get(flox_key).map(|v| parse_skip_list(v));
    match (nixlet, flox) {
        // Compared as sets so that "a,b" and "b, a" do not count as a disagreement.
        (Some(nixlet), Some(flox)) if nixlet != flox => Err(AnnotationError::Conflict {
            nixlet_key: nixlet_key.to_string(),
            nixlet_value: annotations[nixlet_key].clone(),
            flox_key: flox_key.to_string(),
            flox_value: annotations[flox_key].clone(),
        }),
        (Some(list), _) | (None, Some(list)) => Ok(list),
        (None, None) => Ok(BTreeSet::new()),
    }
}

fn parse_skip_list(value: &str) -> BTreeSet<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// The (key, value) set under the nixlet key or its flox alias; the nixlet key is reported
/// when both are set to the same value.
fn one_of<'a>(
    annotations: &'a HashMap<String, String>,
    nixlet_key: &'a str,
    flox_key: &'a str,
) -> Result<Option<(&'a str, &'a str)>, AnnotationError> {
    match (annotations.get(nixlet_key), annotations.get(flox_key)) {
        (Some(nixlet_value), Some(flox_value)) if nixlet_value != flox_value => {
            Err(AnnotationError::Conflict {
                nixlet_key: nixlet_key.to_string(),
                nixlet_value: nixlet_value.clone(),
                flox_key: flox_key.to_string(),
                flox_value: flox_value.clone(),
            })
        }
        (Some(value), _) => Ok(Some((nixlet_key, value.as_str()))),
        (None, Some(value)) => Ok(Some((flox_key, value.as_str()))),
        (None, None) => Ok(None),
    }
}

fn environment((key, value): (&str, &str)) -> Result<Selection, AnnotationError> {
    let reference = EnvRef::parse(value).map_err(|problem| AnnotationError::InvalidReference {
        key: key.to_string(),
        problem,
    })?;
    Ok(Selection::Environment {
        key: key.to_string(),
        reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Annotations as containerd's CRI plugin writes them for container `name` of pod
    /// `default/web-7d4b9`, plus `extra`.
    fn container(name: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut annotations: HashMap<String, String> = [
            (CRI_CONTAINER_TYPE, "container"),
            (CRI_CONTAINER_NAME, name),
            (CRI_SANDBOX_NAME, "web-7d4b9"),
            (CRI_SANDBOX_NAMESPACE, "default"),
            ("io.kubernetes.cri.image-name", "registry.k8s.io/pause:3.9"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (key, value) in extra {
            annotations.insert(key.to_string(), value.to_string());
        }
        annotations
    }

    fn chosen(key: &str, reference: &str) -> Selection {
        Selection::Environment {
            key: key.to_string(),
            reference: EnvRef::parse(reference).unwrap(),
        }
    }

    #[test]
    fn activate_mode_comes_from_either_spelling() {
        assert_eq!(activate_mode(&container("app", &[])), Ok(None));
        assert_eq!(
            activate_mode(&container("app", &[(ACTIVATE_MODE, "run")])),
            Ok(Some(ActivateMode::Run))
        );
        assert_eq!(
            activate_mode(&container("app", &[(FLOX_ACTIVATE_MODE, " dev ")])),
            Ok(Some(ActivateMode::Dev))
        );
        assert_eq!(
            activate_mode(&container("app", &[(FLOX_ACTIVATE_MODE, "build")]))
                .unwrap_err()
                .to_string(),
            "annotation \"flox.dev/activate-mode\" must be \"dev\" or \"run\", not \"build\""
        );
        assert_eq!(
            activate_mode(&container(
                "app",
                &[(ACTIVATE_MODE, "run"), (FLOX_ACTIVATE_MODE, "dev")]
            ))
            .unwrap_err()
            .to_string(),
            "annotations \"nixlet.dev/activate-mode\" (\"run\") and \"flox.dev/activate-mode\" \
             (\"dev\") disagree; set only one of them"
        );
    }

    #[test]
    fn skip_exec_names_containers_by_either_spelling() {
        let flox = [(FLOX_SKIP_CONTAINERS_EXEC, "build, helper")];
        assert_eq!(skips_exec(&container("build", &flox)), Ok(true));
        assert_eq!(skips_exec(&container("app", &flox)), Ok(false));
        assert_eq!(
            skips_exec(&container("build", &[(SKIP_CONTAINERS_EXEC, "build")])),
            Ok(true)
        );
        assert_eq!(skips_exec(&container("build", &[])), Ok(false));
        let mut unnamed = container("", &flox);
        unnamed.remove(CRI_CONTAINER_NAME);
        assert_eq!(skips_exec(&unnamed), Ok(false));
        assert_eq!(
            skips_exec(&container(
                "build",
                &[
                    (SKIP_CONTAINERS_EXEC, "a"),
                    (FLOX_SKIP_CONTAINERS_EXEC, "b")
                ]
            ))
            .unwrap_err()
            .to_string(),
            "annotations \"nixlet.dev/skip-containers-exec\" (\"a\") and \
             \"flox.dev/skip-containers-exec\" (\"b\") disagree; set only one of them"
        );
        // Skipping exec does not skip the container.
        let annotations = container("build", &[(ENVIRONMENT, "acme/web"), flox[0]]);
        assert_eq!(select(&annotations), Ok(chosen(ENVIRONMENT, "acme/web")));
    }

    #[test]
    fn sandbox_is_untouched_whatever_else_is_set() {
        let mut annotations = container("", &[(ENVIRONMENT, "not a reference")]);
        annotations.insert(CRI_CONTAINER_TYPE.into(), "sandbox".into());
        annotations.remove(CRI_CONTAINER_NAME);
        assert_eq!(select(&annotations), Ok(Selection::Untouched));
    }

    #[test]
    fn no_environment_key_is_untouched() {
        assert_eq!(select(&container("app", &[])), Ok(Selection::Untouched));
        assert_eq!(select(&HashMap::new()), Ok(Selection::Untouched));
    }

    #[test]
    fn pod_level_key_applies_to_every_container() {
        let annotations = container("app", &[(ENVIRONMENT, "acme/web:3")]);
        assert_eq!(select(&annotations), Ok(chosen(ENVIRONMENT, "acme/web:3")));
    }

    #[test]
    fn flox_alias_means_the_same() {
        let annotations = container("app", &[(FLOX_ENVIRONMENT, "acme/web")]);
        assert_eq!(
            select(&annotations),
            Ok(chosen(FLOX_ENVIRONMENT, "acme/web"))
        );
        let per_container = container("app", &[("flox.dev/environment.app", "acme/app")]);
        assert_eq!(
            select(&per_container),
            Ok(chosen("flox.dev/environment.app", "acme/app"))
        );
    }

    #[test]
    fn per_container_key_wins_over_pod_level_key() {
        let annotations = container(
            "app",
            &[
                (ENVIRONMENT, "acme/web"),
                ("nixlet.dev/environment.app", "acme/app:2"),
                ("nixlet.dev/environment.sidecar", "acme/sidecar"),
            ],
        );
        assert_eq!(
            select(&annotations),
            Ok(chosen("nixlet.dev/environment.app", "acme/app:2"))
        );
    }

    #[test]
    fn without_container_name_only_pod_level_keys_apply() {
        let mut annotations = container(
            "",
            &[
                ("nixlet.dev/environment.app", "acme/app"),
                (SKIP_CONTAINERS, "app"),
            ],
        );
        annotations.remove(CRI_CONTAINER_NAME);
        annotations.remove(CRI_CONTAINER_TYPE);
        assert_eq!(select(&annotations), Ok(Selection::Untouched));
        annotations.insert(ENVIRONMENT.into(), "acme/web".into());
        assert_eq!(select(&annotations), Ok(chosen(ENVIRONMENT, "acme/web")));
    }

    #[test]
    fn skip_list_wins_even_over_own_environment_key() {
        let annotations = container(
            "istio-proxy",
            &[
                (ENVIRONMENT, "acme/web"),
                ("nixlet.dev/environment.istio-proxy", "acme/proxy"),
                (SKIP_CONTAINERS, " app-init , ,istio-proxy,"),
            ],
        );
        assert_eq!(
            select(&annotations),
            Ok(Selection::Skipped {
                container: "istio-proxy".into()
            })
        );
    }

    #[test]
    fn skipped_container_ignores_a_broken_environment_key() {
        let annotations = container(
            "sidecar",
            &[(ENVIRONMENT, "bad"), (FLOX_SKIP_CONTAINERS, "sidecar")],
        );
        assert_eq!(
            select(&annotations),
            Ok(Selection::Skipped {
                container: "sidecar".into()
            })
        );
    }

    #[test]
    fn skip_list_naming_other_containers_does_not_skip() {
        let annotations = container(
            "app",
            &[
                (ENVIRONMENT, "acme/web"),
                (SKIP_CONTAINERS, "application, ap"),
            ],
        );
        assert_eq!(select(&annotations), Ok(chosen(ENVIRONMENT, "acme/web")));
    }

    #[test]
    fn agreeing_nixlet_and_flox_keys_report_the_nixlet_key() {
        let annotations = container(
            "app",
            &[
                (ENVIRONMENT, "acme/web"),
                (FLOX_ENVIRONMENT, "acme/web"),
                (SKIP_CONTAINERS, "a,b"),
                (FLOX_SKIP_CONTAINERS, "b, a"),
            ],
        );
        assert_eq!(select(&annotations), Ok(chosen(ENVIRONMENT, "acme/web")));
    }

    #[test]
    fn disagreeing_environment_keys_are_an_error_naming_both() {
        let annotations = container(
            "app",
            &[
                ("nixlet.dev/environment.app", "acme/app"),
                ("flox.dev/environment.app", "acme/other"),
            ],
        );
        assert_eq!(
            select(&annotations).unwrap_err().to_string(),
            "annotations \"nixlet.dev/environment.app\" (\"acme/app\") and \
             \"flox.dev/environment.app\" (\"acme/other\") disagree; set only one of them"
        );
    }

    #[test]
    fn disagreeing_skip_lists_are_an_error_naming_both() {
        let annotations = container(
            "app",
            &[(SKIP_CONTAINERS, "a"), (FLOX_SKIP_CONTAINERS, "a,b")],
        );
        assert_eq!(
            select(&annotations).unwrap_err().to_string(),
            "annotations \"nixlet.dev/skip-containers\" (\"a\") and \
             \"flox.dev/skip-containers\" (\"a,b\") disagree; set only one of them"
        );
    }

    #[test]
    fn invalid_reference_names_the_key_and_quotes_the_value() {
        let annotations = container("app", &[("nixlet.dev/environment.app", "acme/web:0")]);
        let error = select(&annotations).unwrap_err();
        assert_eq!(
            error.to_string(),
            "annotation \"nixlet.dev/environment.app\": invalid environment reference \
             \"acme/web:0\": generation \"0\" must be a decimal number from 1 up, without sign \
             or leading zeros"
        );
        assert!(matches!(error, AnnotationError::InvalidReference { .. }));
    }

    #[test]
    fn hostile_values_are_refused_before_anything_is_read() {
        let megabyte = format!("acme/{}", "a".repeat(1 << 20));
        let cases = [
            ("1 MB value", megabyte.as_str()),
            ("control characters", "acme/web\n\u{1b}[31mred"),
            ("nul", "acme/web\0"),
            ("traversal", "../../etc/passwd"),
            ("dot-dot name", "acme/.."),
            ("dot owner", "./web"),
            ("absolute", "/etc/web"),
            ("percent-encoded traversal", "acme/%2e%2e"),
            ("backslash", "acme\\..\\web"),
            ("third component", "acme/web/../../x"),
            ("huge generation", "acme/web:99999999999999999999999"),
        ];
        for (what, value) in cases {
            // Whatever else the spec says, an invalid reference stops the container here:
            // select() is the only way to an EnvRef, and a source needs one to read anything.
            let annotations = container("app", &[(ENVIRONMENT, value)]);
            let error = select(&annotations).unwrap_err();
            assert!(
                matches!(error, AnnotationError::InvalidReference { .. }),
                "{what}: {error}"
            );
            let message = error.to_string();
            assert!(
                !message.chars().any(char::is_control),
                "{what}: {message:?}"
            );
            assert!(message.len() < 1024, "{what}: {} bytes", message.len());
        }
        let megabyte_conflict = container(
            "app",
            &[
                (ENVIRONMENT, megabyte.as_str()),
                (FLOX_ENVIRONMENT, "acme/web"),
            ],
        );
        let message = select(&megabyte_conflict).unwrap_err().to_string();
        assert!(message.len() < 1024, "{} bytes", message.len());
        assert!(
            message.contains(&format!("({} bytes)", megabyte.len())),
            "{message}"
        );
        // The per-container keys hold the container's name, which can be as long.
        let name = "c".repeat(1 << 20);
        let own = container(
            &name,
            &[
                (&format!("{ENVIRONMENT_PREFIX}{name}"), "acme/a"),
                (&format!("{FLOX_ENVIRONMENT_PREFIX}{name}"), "acme/b"),
            ],
        );
        let message = select(&own).unwrap_err().to_string();
        assert!(message.len() < 1024, "{} bytes", message.len());
    }
}
