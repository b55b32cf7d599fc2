//! The CRI runtime service client (CRI `runtime.v1`, which containerd 1.6 serves), with blocking
//! methods: it owns its tokio runtime so that tests and `Drop` cleanup can call it from plain
//! synchronous code.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerState, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxConfig,
    PodSandboxState, PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, RuntimeHandler, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tokio::net::UnixStream;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};

use super::log::{parse_log, LogLine};
use super::spec::{ContainerSpec, PodSpec};
use crate::wait;

/// Upper bound for one CRI call, so that a hung runtime fails the test instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pod sandbox as the kubelet remembers it: CreateContainer needs its config again.
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub log_directory: PathBuf,
}

/// The outcome of ExecSync.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

pub struct Cri {
    runtime: Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects to the CRI socket (containerd's gRPC address); fails if nobody listens.
    pub fn connect(socket: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let socket = socket.to_path_buf();
        let channel = runtime.block_on(async move {
            // The URI is required by tonic but unused: the connector always dials the socket.
            Endpoint::try_from("http://[::]:0")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
        })?;
        Ok(Self {
            runtime,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// Runs one RPC with a deadline; a non-OK status becomes an error quoting its message.
    fn call<T, Fut>(
        &self,
        rpc: &str,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let future = f(self.client.clone());
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, future).await });
        match outcome {
            Err(_) => bail!("{rpc} timed out after {CALL_TIMEOUT:?}"),
            Ok(Err(status)) => Err(anyhow!(
                "{rpc} failed ({:?}): {}",
                status.code(),
                status.message()
            )),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// `<runtime name> <runtime version>`, e.g. `containerd v1.6.20`.
    pub fn version(&self) -> Result<String> {
        let v = self.call("Version", |mut c| async move {
            c.version(VersionRequest::default()).await
        })?;
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// The runtime handlers and their features, as the kubelet reads them from Status (empty
    /// where containerd does not report them: before 2.0).
    pub fn runtime_handlers(&self) -> Result<Vec<RuntimeHandler>> {
        let status = self.call("Status", |mut c| async move {
            c.status(StatusRequest { verbose: false }).await
        })?;
        Ok(status.runtime_handlers)
    }

    pub fn run_pod(&self, spec: &PodSpec) -> Result<Pod> {
        fs::create_dir_all(&spec.log_directory)?;
        let config = spec.to_cri();
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: spec.handler.clone(),
        };
        let response = self.call("RunPodSandbox", |mut c| async move {
            c.run_pod_sandbox(request).await
        })?;
        Ok(Pod {
            id: response.pod_sandbox_id,
            config,
            log_directory: spec.log_directory.clone(),
        })
    }

    /// CreateContainer: in containerd 1.6 this only records metadata; the runtime (and the
    /// nixlet shim's Create) runs at StartContainer.
    pub fn create_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(spec.to_cri()),
            sandbox_config: Some(pod.config.clone()),
        };
        let response = self.call("CreateContainer", |mut c| async move {
            c.create_container(request).await
        })?;
        Ok(response.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.call("StartContainer", |mut c| async move {
            c.start_container(request).await
        })?;
        Ok(())
    }

    /// CreateContainer + StartContainer, as the kubelet does.
    pub fn run_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        let id = self.create_container(pod, spec)?;
        self.start_container(&id)
            .with_context(|| format!("starting container {:?}", spec.name))?;
        Ok(id)
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let response = self.call("ContainerStatus", |mut c| async move {
            c.container_status(request).await
        })?;
        response
            .status
            .ok_or_else(|| anyhow!("ContainerStatus of {id} has no status"))
    }

    /// Waits until the container has exited; returns its exit code.
    pub fn wait_exit(&self, id: &str, timeout: Duration) -> Result<i32> {
        wait::poll(
            &format!("container {id} to exit"),
            timeout,
            Duration::from_millis(100),
            || {
                let status = self.container_status(id)?;
                Ok((status.state == ContainerState::ContainerExited as i32)
                    .then_some(status.exit_code))
            },
        )
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<ExecResult> {
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let response = self.call(
            "ExecSync",
            |mut c| async move { c.exec_sync(request).await },
        )?;
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&response.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&response.stderr).into_owned(),
            exit_code: response.exit_code,
        })
    }

    /// The container's log file, parsed.
    pub fn log(&self, pod: &Pod, spec: &ContainerSpec) -> Result<Vec<LogLine>> {
        let path = pod.log_directory.join(spec.log_path());
        let content =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(parse_log(&content))
    }

    /// What the container wrote to stdout, one `\n`-terminated line per log line.
    pub fn stdout(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String> {
        Ok(self
            .log(pod, spec)?
            .into_iter()
            .filter(|l| l.stream == "stdout")
            .map(|l| l.text + "\n")
            .collect())
    }

    /// Runs a container to completion and returns (exit code, stdout).
    pub fn run_to_exit(&self, pod: &Pod, spec: &ContainerSpec) -> Result<(i32, String)> {
        let id = self.run_container(pod, spec)?;
        let code = self.wait_exit(&id, Duration::from_secs(30))?;
        Ok((code, self.stdout(pod, spec)?))
    }

    pub fn stop_container(&self, id: &str) -> Result<()> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: 0,
        };
        self.call("StopContainer", |mut c| async move {
            c.stop_container(request).await
        })?;
        Ok(())
    }

    /// StopContainer as the kubelet sends it for a pod with `grace` as its termination grace
    /// period: SIGTERM (or the image's stop signal), SIGKILL once `grace` has passed.
    pub fn stop_container_within(&self, id: &str, grace: Duration) -> Result<()> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace.as_secs() as i64,
        };
        self.call("StopContainer", |mut c| async move {
            c.stop_container(request).await
        })?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.call("RemoveContainer", |mut c| async move {
            c.remove_container(request).await
        })?;
        Ok(())
    }

    /// Ids of the containers of one pod (all states).
    pub fn containers_of(&self, pod_id: &str) -> Result<Vec<String>> {
        let response = self.call("ListContainers", |mut c| async move {
            c.list_containers(ListContainersRequest::default()).await
        })?;
        Ok(response
            .containers
            .into_iter()
            .filter(|c| c.pod_sandbox_id == pod_id)
            .map(|c| c.id)
            .collect())
    }

    /// Ids of every container containerd knows in the CRI namespace.
    pub fn container_ids(&self) -> Result<Vec<String>> {
        let response = self.call("ListContainers", |mut c| async move {
            c.list_containers(ListContainersRequest::default()).await
        })?;
        Ok(response.containers.into_iter().map(|c| c.id).collect())
    }

    pub fn pod_ids(&self) -> Result<Vec<String>> {
        let response = self.call("ListPodSandbox", |mut c| async move {
            c.list_pod_sandbox(ListPodSandboxRequest::default()).await
        })?;
        Ok(response.items.into_iter().map(|p| p.id).collect())
    }

    /// Whether the pod sandbox is ready (its pause container runs), as the kubelet asks before
    /// it decides to make a new sandbox.
    pub fn pod_ready(&self, id: &str) -> Result<bool> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let response = self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(request).await
        })?;
        let status = response
            .status
            .ok_or_else(|| anyhow!("PodSandboxStatus of {id} has no status"))?;
        Ok(status.state == PodSandboxState::SandboxReady as i32)
    }

    /// StopPodSandbox alone: the kubelet stops a sandbox whose pause container died before it
    /// makes a new one, and removes the old one later.
    pub fn stop_pod(&self, id: &str) -> Result<()> {
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(stop).await
        })?;
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox (which removes its containers), as the kubelet does
    /// when a pod is deleted.
    pub fn stop_and_remove_pod(&self, id: &str) -> Result<()> {
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(stop).await
        })?;
        let remove = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(remove).await
        })?;
        Ok(())
    }

    /// Stops and removes every pod; returns the errors instead of stopping at the first.
    pub fn remove_all_pods(&self) -> Vec<String> {
        let ids = match self.pod_ids() {
            Ok(ids) => ids,
            Err(e) => return vec![format!("{e:#}")],
        };
        ids.iter()
            .filter_map(|id| self.stop_and_remove_pod(id).err())
            .map(|e| format!("{e:#}"))
            .collect()
    }
}
