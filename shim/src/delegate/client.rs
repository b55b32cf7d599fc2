//! A task client for the runc shim that speaks whichever task API it serves (v2 for containerd
//! 1.x's runc shim, v3 for 2.x's). The messages are the same in both; only the ttrpc service
//! name differs, so one generic call carries every RPC.
//!
//! Each connection carries one call at a time. The Go ttrpc server of the runc shim (containerd
//! 1.7 and 2.x) refuses a request whose stream id is not above every earlier one on its
//! connection ("StreamID cannot be re-used and must increment"), and the Rust ttrpc client takes
//! a stream id before it queues the request for writing, so two calls started together on one
//! connection may reach the wire in the wrong order: the later-numbered one first, the other
//! refused. containerd then took the refused `Wait` or `State` for a dead task (exit status
//! 255, "cannot exec in a stopped state"). Calls therefore take an idle connection, or open a
//! new one when all are busy (a pod has a long `Wait` in flight per container), and give it
//! back when the answer came.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::protos::api::{ConnectRequest, ConnectResponse};
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::ttrpc::context::{with_timeout, Context};
use containerd_shim::protos::ttrpc::r#async::Client;
use containerd_shim::protos::ttrpc::{self, Code, Request};

use crate::bootstrap::{ShimEndpoint, TaskApi};

use super::DelegateError;

/// How long a runc shim that accepted the connection may take to answer the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle connections kept for reuse; more are opened while calls overlap, and closed after.
const MAX_IDLE_CONNECTIONS: usize = 4;

#[derive(Clone)]
pub struct DelegateClient {
    address: String,
    task_api: TaskApi,
    idle: Arc<Mutex<Vec<Client>>>,
}

impl DelegateClient {
    /// Opens a first connection, so that a runc shim that is not there is an error here.
    pub async fn connect(endpoint: &ShimEndpoint) -> Result<DelegateClient, DelegateError> {
        let client =
            Client::connect(&endpoint.address)
                .await
                .map_err(|source| DelegateError::Connect {
                    address: endpoint.address.clone(),
                    source,
                })?;
        Ok(DelegateClient {
            address: endpoint.address.clone(),
            task_api: endpoint.task_api,
            idle: Arc::new(Mutex::new(vec![client])),
        })
    }

    /// Connects to a runc shim whose task API is not known (it was not started by this process):
    /// v3 first, as containerd 2.x's runc shim serves, then v2.
    pub async fn connect_probing(address: &str, id: &str) -> Result<DelegateClient, DelegateError> {
        let mut last = None;
        for task_api in [TaskApi::V3, TaskApi::V2] {
            let endpoint = ShimEndpoint {
                address: address.to_string(),
                task_api,
            };
            let client = DelegateClient::connect(&endpoint).await?;
            let request = ConnectRequest {
                id: id.to_string(),
                ..Default::default()
            };
            match client
                .call::<_, ConnectResponse>(
                    with_timeout(PROBE_TIMEOUT.as_nanos() as i64),
                    "Connect",
                    &request,
                )
                .await
            {
                Ok(_) => return Ok(client),
                // A service the server does not have: try the other name.
                Err(ttrpc::Error::RpcStatus(status))
                    if matches!(status.code(), Code::UNIMPLEMENTED | Code::NOT_FOUND) =>
                {
                    last = Some(ttrpc::Error::RpcStatus(status));
                }
                Err(source) => {
                    return Err(DelegateError::Connect {
                        address: address.to_string(),
                        source,
                    })
                }
            }
        }
        Err(DelegateError::Connect {
            address: address.to_string(),
            source: last.expect("two attempts were made"),
        })
    }

    pub fn task_api(&self) -> TaskApi {
        self.task_api
    }

    /// Calls `method` (the RPC's name in the task service, e.g. `"Create"`).
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        ctx: Context,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let request = Request {
            service: self.task_api.service().to_string(),
            method: method.to_string(),
            timeout_nano: ctx.timeout_nano,
            metadata: ttrpc::context::to_pb(ctx.metadata),
            payload: req
                .write_to_bytes()
                .map_err(|error| ttrpc::Error::Others(format!("encode {method}: {error}")))?,
            ..Default::default()
        };
        let client = match self.take_idle() {
            Some(client) => client,
            None => Client::connect(&self.address).await?,
        };
        let answer = client.request(request).await;
        // A connection that answered (even with an error status) is in order; one that failed
        // or timed out may still get a late answer, so it is dropped.
        if matches!(answer, Ok(_) | Err(ttrpc::Error::RpcStatus(_))) {
            self.give_back(client);
        }
        let response = answer?;
        let mut response_message = Resp::new();
        response_message
            .merge_from(&mut CodedInputStream::from_bytes(&response.payload))
            .map_err(|error| ttrpc::Error::Others(format!("decode {method} answer: {error}")))?;
        Ok(response_message)
    }

    fn take_idle(&self) -> Option<Client> {
        self.idle.lock().expect("idle connections poisoned").pop()
    }

    fn give_back(&self, client: Client) {
        let mut idle = self.idle.lock().expect("idle connections poisoned");
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(client);
        }
    }
}
