//! nixlet's task service: every RPC is forwarded to the runc shim; Create and Exec are changed
//! on the way for containers that run in a nixlet environment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::error::get_rpc_status;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::{self, context::Context, Code};
use tokio::sync::OnceCell;

use crate::bootstrap::ShimEndpoint;
use crate::create_error::{cause_chain, CreateError, Phase};
use crate::create_report::CreateReport;
use crate::delegate::DelegateClient;
use crate::env_overlay::EnvOverlay;
use crate::gc_root;
use crate::prepare::{prepare_bundle, ContainerRef, Prepared};
use crate::runtime_options::options_for_delegate;
use crate::spec_rewrite::rewrite_process;
use nixlet_config::ConfigError;
use nixlet_config::NodeConfig;
use nixlet_store::Fetcher;

/// What nixlet remembers of a container it rewrote.
#[derive(Debug, Clone)]
struct Rewritten {
    overlay: EnvOverlay,
    gc_roots_dir: PathBuf,
}

/// Time for the Shutdown answer to reach containerd before the server stops.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

pub struct NixletTask {
    /// Read once when the daemon starts: a pod's containers see one config, and an edit that
    /// breaks the file cannot break a running pod's cleanup. New pods read the file anew.
    config: Result<Arc<NodeConfig>, Arc<ConfigError>>,
    /// One per daemon, so its HTTP connections, cache infos and negative lookups serve every
    /// Create of the pod (and none is made when no container needs a fetch).
    fetcher: OnceCell<Fetcher>,
    delegate_endpoint: ShimEndpoint,
    delegate: OnceCell<DelegateClient>,
    /// containerd namespace this shim serves (GC roots are named by namespace and id).
    namespace: String,
    /// Containers created through this shim, with the overlay of those nixlet rewrote. Mirrors
    /// the runc shim's own table so that nixlet exits when the runc shim does.
    containers: Mutex<HashMap<String, Option<Rewritten>>>,
    exit: Arc<ExitSignal>,
}

impl NixletTask {
    pub fn new(
        delegate_endpoint: ShimEndpoint,
        namespace: String,
        exit: Arc<ExitSignal>,
    ) -> NixletTask {
        let config = NodeConfig::load().map(Arc::new).map_err(|error| {
            tracing::error!(error = %error, "node config unreadable: nixlet refuses every Create of this pod");
            Arc::new(error)
        });
        NixletTask {
            config,
            fetcher: OnceCell::new(),
            delegate_endpoint,
            namespace,
            delegate: OnceCell::new(),
            containers: Mutex::new(HashMap::new()),
            exit,
        }
    }

    async fn client(&self) -> ttrpc::Result<&DelegateClient> {
        self.delegate
            .get_or_try_init(|| DelegateClient::connect(&self.delegate_endpoint))
            .await
            .map_err(|error| get_rpc_status(Code::UNAVAILABLE, format!("nixlet: {error}")))
    }

    fn overlay_of(&self, id: &str) -> Option<EnvOverlay> {
        self.containers
            .lock()
            .expect("container table poisoned")
            .get(id)
            .cloned()
            .flatten()
            .map(|rewritten| rewritten.overlay)
    }

    async fn prepare(
        &self,
        req: &CreateTaskRequest,
        config: &NodeConfig,
    ) -> Result<Prepared, CreateError> {
        let started = std::time::Instant::now();
        let mut report = CreateReport::default();
        let container = ContainerRef {
            namespace: self.namespace.clone(),
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
        };
        let prepared = prepare_bundle(&container, config, &self.fetcher, &mut report).await;
        report.finish(
            &req.id,
            prepared.as_ref(),
            started.elapsed(),
            &config.telemetry_dir(),
        );
        prepared
    }

    /// The node config this daemon read, or the refusal of a Create when it could not.
    fn config(&self, id: &str) -> Result<Arc<NodeConfig>, CreateError> {
        self.config.clone().map_err(|error| {
            let error = CreateError::new(Phase::Config, None, &*error);
            // The node's record is where the default config keeps it.
            let report = CreateReport::default();
            report.finish(
                id,
                Err(&error),
                std::time::Duration::ZERO,
                &NodeConfig::default().telemetry_dir(),
            );
            error
        })
    }

    /// Drops the container's GC root: at Delete, and when the runc shim refused a Create that
    /// nixlet had prepared.
    fn release_root(&self, id: &str, roots_dir: &std::path::Path) {
        if let Err(error) = gc_root::remove_root(roots_dir, &self.namespace, id) {
            tracing::warn!(container = %id, error = %error, "cannot remove gc root");
        }
    }
}

/// The deadline containerd set on the incoming call carries over to the forwarded one.
fn forward_context(ctx: &TtrpcContext) -> Context {
    Context {
        metadata: ctx.metadata.clone(),
        timeout_nano: ctx.timeout_nano,
    }
}

#[async_trait]
impl Task for NixletTask {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        mut req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let id = req.id.clone();
        let refuse = |error: CreateError| {
            tracing::warn!(container = %id, phase = %error.phase, error = %error, "create refused");
            let code = match error.phase {
                Phase::Resolve => Code::INVALID_ARGUMENT,
                _ => Code::FAILED_PRECONDITION,
            };
            get_rpc_status(code, error.to_string())
        };
        let config = self.config(&id).map_err(refuse)?;
        // Checked before anything is fetched, rewritten or rooted: a refusal here leaves nothing.
        let options = options_for_delegate(req.options.as_ref(), &config.runtime.runc_options)
            .map_err(|error| {
                get_rpc_status(
                    Code::INVALID_ARGUMENT,
                    format!("nixlet: delegate: runtime options: {}", cause_chain(&error)),
                )
            })?;
        req.options = MessageField::from_option(options);
        let prepared = self.prepare(&req, &config).await.map_err(refuse)?;

        let forwarded = match self.client().await {
            Ok(client) => client.call(forward_context(ctx), "Create", &req).await,
            Err(error) => Err(error),
        };
        let rewritten = match prepared {
            Prepared::Unchanged => None,
            Prepared::Rewritten { overlay, .. } => Some(Rewritten {
                overlay,
                gc_roots_dir: config.gc_roots_dir.clone(),
            }),
        };
        let response = match forwarded {
            Ok(response) => response,
            Err(error) => {
                if rewritten.is_some() {
                    self.release_root(&req.id, &config.gc_roots_dir);
                }
                return Err(error);
            }
        };
        self.containers
            .lock()
            .expect("container table poisoned")
            .insert(req.id.clone(), rewritten);
        Ok(response)
    }

    async fn exec(&self, ctx: &TtrpcContext, mut req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        if let Some(overlay) = self.overlay_of(&req.id) {
            if let Some(spec) = req.spec.as_mut() {
                spec.value = overlay_exec_process(&spec.value, &overlay).map_err(|detail| {
                    get_rpc_status(
                        Code::INVALID_ARGUMENT,
                        format!("nixlet: exec {} in {}: {detail}", req.exec_id, req.id),
                    )
                })?;
            }
        }
        self.client()
            .await?
            .call(forward_context(ctx), "Exec", &req)
            .await
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let response = self
            .client()
            .await?
            .call(forward_context(ctx), "Delete", &req)
            .await?;
        if req.exec_id.is_empty() {
            let removed = self
                .containers
                .lock()
                .expect("container table poisoned")
                .remove(&req.id);
            if let Some(Some(rewritten)) = removed {
                self.release_root(&req.id, &rewritten.gc_roots_dir);
            }
        }
        Ok(response)
    }

    async fn shutdown(&self, ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let forwarded = self
            .client()
            .await?
            .call(forward_context(ctx), "Shutdown", &req)
            .await;
        // The runc shim exits on Shutdown once it serves no container, sometimes before its
        // answer reaches nixlet; nixlet then exits too, after answering containerd.
        let idle = self
            .containers
            .lock()
            .expect("container table poisoned")
            .is_empty();
        match forwarded {
            Ok(response) if !idle => Ok(response),
            Err(error) if !idle => Err(error),
            _ => {
                let exit = self.exit.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                    exit.signal();
                });
                Ok(Empty::new())
            }
        }
    }

    async fn state(&self, ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "State", &req)
            .await
    }

    async fn start(&self, ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "Start", &req)
            .await
    }

    async fn pids(&self, ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "Pids", &req)
            .await
    }

    async fn pause(&self, ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "Pause", &req)
            .await
    }

    async fn resume(&self, ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "Resume", &req)
            .await
    }

    async fn checkpoint(
        &self,
        ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "Checkpoint", &req)
            .await
    }

    async fn kill(&self, ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "Kill", &req)
            .await
    }

    async fn resize_pty(&self, ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "ResizePty", &req)
            .await
    }

    async fn close_io(&self, ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "CloseIO", &req)
            .await
    }

    async fn update(&self, ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .call(forward_context(ctx), "Update", &req)
            .await
    }

    async fn wait(&self, ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "Wait", &req)
            .await
    }

    async fn stats(&self, ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "Stats", &req)
            .await
    }

    async fn connect(
        &self,
        ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        self.client()
            .await?
            .call(forward_context(ctx), "Connect", &req)
            .await
    }
}

/// An exec's process spec arrives as the JSON of an OCI `Process`; give it the container's
/// overlay so `kubectl exec` finds the environment's programs too.
fn overlay_exec_process(json: &[u8], overlay: &EnvOverlay) -> Result<Vec<u8>, String> {
    let mut process: serde_json::Value =
        serde_json::from_slice(json).map_err(|error| format!("process spec: {error}"))?;
    let object = process
        .as_object_mut()
        .ok_or_else(|| "process spec is not a JSON object".to_string())?;
    rewrite_process(object, overlay).map_err(|error| error.to_string())?;
    serde_json::to_vec(&process).map_err(|error| format!("process spec: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_gets_the_overlay_and_keeps_everything_else() {
        let overlay = EnvOverlay {
            prepend: vec![crate::env_overlay::Prepend {
                name: "PATH".into(),
                dirs: vec!["/nix/store/x-hello/bin".into()],
                default: "/bin".into(),
            }],
            vars: vec![("GREETING".into(), "hi".into())],
        };
        let json = br#"{"args":["sh"],"env":["PATH=/bin"],"cwd":"/","terminal":true}"#;
        let rewritten: serde_json::Value =
            serde_json::from_slice(&overlay_exec_process(json, &overlay).unwrap()).unwrap();
        assert_eq!(
            rewritten,
            serde_json::json!({
                "args": ["sh"],
                "env": ["PATH=/nix/store/x-hello/bin:/bin", "GREETING=hi"],
                "cwd": "/",
                "terminal": true
            })
        );
    }

    #[test]
    fn malformed_exec_process_is_an_error() {
        let overlay = EnvOverlay {
            prepend: vec![],
            vars: vec![],
        };
        assert!(overlay_exec_process(b"[1]", &overlay).is_err());
    }
}
