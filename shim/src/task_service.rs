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
use containerd_shim::protos::shim_async::{Task, TaskClient};
use containerd_shim::protos::ttrpc::error::get_rpc_status;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::{self, context::Context, Code};
use tokio::sync::OnceCell;

use crate::config::NodeConfig;
use crate::create_error::{cause_chain, CreateError, Phase};
use crate::delegate;
use crate::env_overlay::EnvOverlay;
use crate::prepare::{prepare_bundle, Prepared};
use crate::runtime_options::options_for_delegate;
use crate::spec_rewrite::rewrite_process;

/// Time for the Shutdown answer to reach containerd before the server stops.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

pub struct NixletTask {
    delegate_address: String,
    delegate: OnceCell<TaskClient>,
    /// Containers created through this shim, with the overlay of those nixlet rewrote. Mirrors
    /// the runc shim's own table so that nixlet exits when the runc shim does.
    containers: Mutex<HashMap<String, Option<EnvOverlay>>>,
    exit: Arc<ExitSignal>,
}

impl NixletTask {
    pub fn new(delegate_address: String, exit: Arc<ExitSignal>) -> NixletTask {
        NixletTask {
            delegate_address,
            delegate: OnceCell::new(),
            containers: Mutex::new(HashMap::new()),
            exit,
        }
    }

    async fn client(&self) -> ttrpc::Result<&TaskClient> {
        self.delegate
            .get_or_try_init(|| delegate::connect(&self.delegate_address))
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
    }

    async fn prepare(
        &self,
        req: &CreateTaskRequest,
    ) -> Result<(Prepared, NodeConfig), CreateError> {
        let config =
            NodeConfig::load().map_err(|error| CreateError::new(Phase::Config, None, &error))?;
        let bundle = PathBuf::from(&req.bundle);
        let config_for_prepare = config.clone();
        let prepared =
            tokio::task::spawn_blocking(move || prepare_bundle(&bundle, &config_for_prepare))
                .await
                .map_err(|error| CreateError::new(Phase::Rewrite, None, &error))??;
        Ok((prepared, config))
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
        let (prepared, config) = match self.prepare(&req).await {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(container = %req.id, phase = %error.phase, error = %error, "create refused");
                let code = match error.phase {
                    Phase::Resolve => Code::INVALID_ARGUMENT,
                    _ => Code::FAILED_PRECONDITION,
                };
                return Err(get_rpc_status(code, error.to_string()));
            }
        };
        let options =
            options_for_delegate(req.options.as_ref(), config.runtime.binary_name.as_deref())
                .map_err(|error| {
                    get_rpc_status(
                        Code::INVALID_ARGUMENT,
                        format!("nixlet: delegate: runtime options: {}", cause_chain(&error)),
                    )
                })?;
        req.options = MessageField::from_option(options);

        let response = self
            .client()
            .await?
            .create(forward_context(ctx), &req)
            .await?;
        let overlay = match prepared {
            Prepared::Unchanged => None,
            Prepared::Rewritten { overlay, .. } => Some(overlay),
        };
        self.containers
            .lock()
            .expect("container table poisoned")
            .insert(req.id.clone(), overlay);
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
        self.client().await?.exec(forward_context(ctx), &req).await
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let response = self
            .client()
            .await?
            .delete(forward_context(ctx), &req)
            .await?;
        if req.exec_id.is_empty() {
            self.containers
                .lock()
                .expect("container table poisoned")
                .remove(&req.id);
        }
        Ok(response)
    }

    async fn shutdown(&self, ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let forwarded = self
            .client()
            .await?
            .shutdown(forward_context(ctx), &req)
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
        self.client().await?.state(forward_context(ctx), &req).await
    }

    async fn start(&self, ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.client().await?.start(forward_context(ctx), &req).await
    }

    async fn pids(&self, ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.client().await?.pids(forward_context(ctx), &req).await
    }

    async fn pause(&self, ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.client().await?.pause(forward_context(ctx), &req).await
    }

    async fn resume(&self, ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .resume(forward_context(ctx), &req)
            .await
    }

    async fn checkpoint(
        &self,
        ctx: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .checkpoint(forward_context(ctx), &req)
            .await
    }

    async fn kill(&self, ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.client().await?.kill(forward_context(ctx), &req).await
    }

    async fn resize_pty(&self, ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .resize_pty(forward_context(ctx), &req)
            .await
    }

    async fn close_io(&self, ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .close_io(forward_context(ctx), &req)
            .await
    }

    async fn update(&self, ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.client()
            .await?
            .update(forward_context(ctx), &req)
            .await
    }

    async fn wait(&self, ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.client().await?.wait(forward_context(ctx), &req).await
    }

    async fn stats(&self, ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.client().await?.stats(forward_context(ctx), &req).await
    }

    async fn connect(
        &self,
        ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        self.client()
            .await?
            .connect(forward_context(ctx), &req)
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
            path_prefix: vec!["/nix/store/x-hello/bin".into()],
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
            path_prefix: vec![],
            vars: vec![],
        };
        assert!(overlay_exec_process(b"[1]", &overlay).is_err());
    }
}
