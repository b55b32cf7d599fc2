//! Every YAML under runtime-class/ and examples/ is a Kubernetes object the API server accepts as
//! written: parsed into the `k8s-openapi` type for its kind, re-serialized, and compared with the
//! original, so a misspelled or misplaced field (which serde would drop silently) fails here
//! instead of being pruned by the API server. The kustomization is checked against the files it
//! names, and the node config it ships is parsed by the shim's own parser.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            found.push(path);
        }
    }
}

/// Each YAML document of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: not YAML: {error}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Parses `value` as `T` and requires that nothing was lost on the way.
fn strict<T: DeserializeOwned + Serialize>(value: &Value, path: &Path) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &again,
        value,
        "{}: fields the Kubernetes type does not have were dropped (left: parsed, right: file)",
        path.display()
    );
    typed
}

/// The object kinds nixlet's manifests use; anything else is an error, not a skip.
enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    DaemonSet(Box<DaemonSet>),
    RuntimeClass(RuntimeClass),
    Kustomization(Kustomization),
    /// Checked, but nothing more to look at here (the examples' pods, plain ConfigMaps).
    Other,
}

fn parse_object(value: &Value, path: &Path) -> Object {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    let kind = value["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => Object::Namespace(strict(value, path)),
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(value, path)),
        ("v1", "ConfigMap") => {
            strict::<ConfigMap>(value, path);
            Object::Other
        }
        ("v1", "Pod") => {
            strict::<Pod>(value, path);
            Object::Other
        }
        ("v1", "Service") => {
            strict::<Service>(value, path);
            Object::Other
        }
        ("apps/v1", "Deployment") => {
            strict::<Deployment>(value, path);
            Object::Other
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(value, path)),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(value, path))
        }
        ("apps/v1", "DaemonSet") => Object::DaemonSet(Box::new(strict(value, path))),
        ("node.k8s.io/v1", "RuntimeClass") => Object::RuntimeClass(strict(value, path)),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
            Object::Kustomization(strict(value, path))
        }
        _ => panic!(
            "{}: unexpected object {api_version}/{kind}: add its type to this test",
            path.display()
        ),
    }
}

/// The part of kustomize's schema runtime-class/ uses, strictly.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    config_map_generator: Vec<ConfigMapGenerator>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<Image>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigMapGenerator {
    name: String,
    files: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Image {
    name: String,
    new_name: String,
    new_tag: String,
}

#[test]
fn every_manifest_parses_strictly_into_kubernetes_types() {
    let mut files = Vec::new();
    yaml_files(&repository().join("runtime-class"), &mut files);
    yaml_files(&repository().join("examples"), &mut files);
    assert!(!files.is_empty(), "no manifests found");
    for path in &files {
        for document in documents(path) {
            parse_object(&document, path);
        }
    }
}

#[test]
fn runtime_class_kustomization_is_complete_and_consistent() {
    let dir = repository().join("runtime-class");
    let mut objects = Vec::new();
    let Object::Kustomization(kustomization) =
        parse_object(&documents(&dir.join("kustomization.yaml"))[0], &dir)
    else {
        panic!("kustomization.yaml is not a Kustomization");
    };
    assert_eq!(kustomization.namespace, "nixlet-system");

    // Every manifest in the folder is applied, and every listed one exists.
    let mut on_disk = Vec::new();
    yaml_files(&dir, &mut on_disk);
    let on_disk: BTreeSet<String> = on_disk
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = kustomization.resources.iter().cloned().collect();
    assert_eq!(listed, on_disk, "kustomization resources vs files");
    for resource in &kustomization.resources {
        let path = dir.join(resource);
        for document in documents(&path) {
            objects.push(parse_object(&document, &path));
        }
    }

    // The generated ConfigMap holds a node config the shim accepts.
    let [generator] = kustomization.config_map_generator.as_slice() else {
        panic!("expected one configMapGenerator");
    };
    let [file] = generator.files.as_slice() else {
        panic!("expected one file in the node config ConfigMap");
    };
    let (key, source) = file.split_once('=').expect("key=file");
    assert_eq!(key, "config.toml");
    let text = fs::read_to_string(dir.join(source)).unwrap();
    nixlet_config::NodeConfig::parse(&text, Path::new(source))
        .unwrap_or_else(|error| panic!("{error}"));

    let daemonset = objects
        .iter()
        .find_map(|object| match object {
            Object::DaemonSet(daemonset) => Some(daemonset),
            _ => None,
        })
        .expect("a DaemonSet");
    let pod = daemonset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let service_account = objects
        .iter()
        .find_map(|object| match object {
            Object::ServiceAccount(account) => account.metadata.name.clone(),
            _ => None,
        })
        .expect("a ServiceAccount");
    assert_eq!(pod.service_account_name.as_ref(), Some(&service_account));
    assert_eq!(
        pod.host_pid,
        Some(true),
        "nsenter -t 1 needs the host's PIDs"
    );
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "the DaemonSet must tolerate every taint"
    );
    let config_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|volume| volume.config_map.as_ref())
        .expect("a ConfigMap volume");
    assert_eq!(config_volume.name, generator.name);
    let install = &pod.init_containers.as_ref().unwrap()[0];
    let args = install.args.as_ref().unwrap();
    assert_eq!(&args[..2], ["node", "install"]);
    assert!(args.contains(&"--host-root=/host".to_string()));
    for container in pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
    {
        assert!(
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some(),
            "container {} has no resource requests",
            container.name
        );
    }

    let namespace = objects
        .iter()
        .find_map(|object| match object {
            Object::Namespace(namespace) => Some(namespace),
            _ => None,
        })
        .expect("a Namespace");
    assert_eq!(
        namespace.metadata.name.as_ref(),
        Some(&kustomization.namespace)
    );
    assert_eq!(
        namespace
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get("pod-security.kubernetes.io/enforce"))
            .map(String::as_str),
        Some("privileged"),
        "Pod Security admission must admit the privileged installer"
    );
    let binding = objects
        .iter()
        .find_map(|object| match object {
            Object::ClusterRoleBinding(binding) => Some(binding),
            _ => None,
        })
        .expect("a ClusterRoleBinding");
    let [subject] = binding.subjects.as_deref().unwrap_or_default() else {
        panic!("the binding has one subject");
    };
    assert_eq!(
        (
            subject.kind.as_str(),
            Some(&subject.name),
            subject.namespace.as_ref()
        ),
        (
            "ServiceAccount",
            Some(&service_account),
            Some(&kustomization.namespace)
        )
    );

    let runtime_class = objects
        .iter()
        .find_map(|object| match object {
            Object::RuntimeClass(class) => Some(class),
            _ => None,
        })
        .expect("a RuntimeClass");
    assert_eq!(runtime_class.handler, nixlet_installer::names::RUNTIME_NAME);
    assert_eq!(runtime_class.metadata.name.as_deref(), Some("nixlet"));
    let selector = runtime_class
        .scheduling
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .expect("scheduling.nodeSelector");
    assert_eq!(
        selector.get("nixlet.dev/ready").map(String::as_str),
        Some("true")
    );

    let role = objects
        .iter()
        .find_map(|object| match object {
            Object::ClusterRole(role) => Some(role),
            _ => None,
        })
        .expect("a ClusterRole");
    let rules = role.rules.as_ref().unwrap();
    let granted: Vec<(Vec<String>, Vec<String>)> = rules
        .iter()
        .map(|rule| {
            (
                rule.resources.clone().unwrap_or_default(),
                rule.verbs.clone(),
            )
        })
        .collect();
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        granted,
        [
            (owned(&["nodes"]), owned(&["get", "patch"])),
            (owned(&["events"]), owned(&["create", "patch"])),
        ],
        "get and patch nodes, create and patch events, nothing more"
    );
    assert!(rules
        .iter()
        .all(|rule| rule.api_groups.as_deref() == Some(&[String::new()][..])));

    // The scrape annotations name the port the node agent serves /metrics on.
    let template = &daemonset.spec.as_ref().unwrap().template;
    let annotations = template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let node = &pod.containers[0];
    let port = node.ports.as_ref().unwrap()[0].container_port;
    assert_eq!(annotations["prometheus.io/port"], port.to_string());
    assert_eq!(
        nixlet_config::DEFAULT_METRICS_LISTEN,
        format!("0.0.0.0:{port}")
    );
}

#[test]
fn a_misspelled_field_is_caught() {
    let value: Value = serde_yaml::from_str(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: nixlet}\nhandler: nixlet\nschedulling: {}\n",
    )
    .unwrap();
    let result = std::panic::catch_unwind(|| {
        strict::<RuntimeClass>(&value, Path::new("runtime-class.yaml"));
    });
    assert!(result.is_err());
}
