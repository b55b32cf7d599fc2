//! containerd's shim bootstrap messages (`containerd.runtime.bootstrap.v1`, containerd 2.3+):
//! `BootstrapParams` arrives on a shim's stdin at `start`, `BootstrapResult` is its answer on
//! stdout. Field numbers and types follow containerd's `api/runtime/bootstrap/v1/bootstrap.proto`.

use prost_types::Any;

#[derive(Clone, PartialEq, prost::Message)]
pub struct BootstrapParams {
    #[prost(string, tag = "1")]
    pub instance_id: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// INFO = 0, more verbose levels negative (DEBUG = -4, TRACE = -8), an open enum.
    #[prost(int32, tag = "3")]
    pub log_level: i32,
    #[prost(string, tag = "4")]
    pub containerd_version: String,
    #[prost(string, tag = "5")]
    pub containerd_ttrpc_address: String,
    #[prost(string, tag = "6")]
    pub containerd_grpc_address: String,
    #[prost(string, tag = "7")]
    pub containerd_binary: String,
    #[prost(message, repeated, tag = "8")]
    pub extensions: Vec<Extension>,
    /// Where the shim's socket goes, when containerd's `socket_dir` is configured.
    #[prost(string, optional, tag = "9")]
    pub socket_dir: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Extension {
    #[prost(message, optional, tag = "1")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BootstrapResult {
    /// The task API the shim serves: 2 or 3.
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(string, tag = "2")]
    pub address: String,
    /// "ttrpc" or "grpc".
    #[prost(string, tag = "3")]
    pub protocol: String,
    #[prost(int32, repeated, tag = "4")]
    pub capabilities: Vec<i32>,
    #[prost(map = "string, string", tag = "5")]
    pub metadata: std::collections::HashMap<String, String>,
}

/// `LOG_LEVEL_DEBUG`: containerd asks for debug logs at this level or below.
pub const LOG_LEVEL_DEBUG: i32 = -4;
