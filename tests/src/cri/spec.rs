//! What a test says about a pod and a container, turned into the CRI configs a kubelet sends.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

/// A pod: name, CRI handler (RuntimeClass), annotations. Uses the host network, like every pod
/// of these tests (there is no CNI).
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub uid: String,
    pub handler: String,
    pub annotations: HashMap<String, String>,
    pub log_directory: PathBuf,
    pub cgroup_parent: String,
    /// The kubelet's count of sandboxes it made for this pod before (0 for the first).
    pub attempt: u32,
}

impl PodSpec {
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn to_cri(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: "default".to_owned(),
                attempt: self.attempt,
            }),
            log_directory: self.log_directory.display().to_string(),
            annotations: self.annotations.clone(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A container: image, command, env, annotations, and optionally a read-only root filesystem
/// and host bind mounts.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub annotations: HashMap<String, String>,
    pub readonly_rootfs: bool,
    /// (host path, container path), read-only.
    pub mounts: Vec<(String, String)>,
    /// The kubelet's count of containers it made under this name in the sandbox before.
    pub attempt: u32,
}

impl ContainerSpec {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            ..Default::default()
        }
    }

    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn readonly_rootfs(mut self) -> Self {
        self.readonly_rootfs = true;
        self
    }

    pub fn mount_ro(mut self, host: &str, container: &str) -> Self {
        self.mounts.push((host.to_owned(), container.to_owned()));
        self
    }

    /// The log file name below the pod's log directory (one per attempt, as the kubelet
    /// keeps them).
    pub fn log_path(&self) -> String {
        match self.attempt {
            0 => format!("{}.log", self.name),
            n => format!("{}.{n}.log", self.name),
        }
    }

    pub fn to_cri(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: self.name.clone(),
                attempt: self.attempt,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: self.command.clone(),
            args: self.args.clone(),
            envs: self
                .env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: self
                .mounts
                .iter()
                .map(|(host, container)| Mount {
                    host_path: host.clone(),
                    container_path: container.clone(),
                    readonly: true,
                    ..Default::default()
                })
                .collect(),
            annotations: self.annotations.clone(),
            log_path: self.log_path(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    readonly_rootfs: self.readonly_rootfs,
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Network in the node's namespace (no CNI); pid and ipc per pod as usual.
fn host_network() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}
