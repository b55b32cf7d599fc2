//! The stock `containerd-shim-runc-v2` that does the real work for every container: how nixlet
//! starts it, cleans up after it and talks to it, on every containerd version.

mod client;
mod process;

pub use client::DelegateClient;
pub use process::{delete, info, shutdown_quietly, start, wait_serving, ShimArgs};

/// Environment through which `start` tells nixlet's daemon where the runc shim listens and
/// which task API it serves.
pub const DELEGATE_ADDRESS_ENV: &str = "NIXLET_DELEGATE_ADDRESS";
pub const DELEGATE_TASK_API_ENV: &str = "NIXLET_DELEGATE_TASK_API";

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("run {binary} {action}: {source}")]
    Spawn {
        binary: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} {action} failed ({status}): {stderr}")]
    Failed {
        binary: String,
        action: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{binary} {action} {source}")]
    Answer {
        binary: String,
        action: &'static str,
        #[source]
        source: crate::bootstrap::AnswerError,
    },
    #[error("{binary} {action} printed an unreadable answer: {detail}")]
    BadOutput {
        binary: String,
        action: &'static str,
        detail: String,
    },
    #[error("connect to runc shim at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: containerd_shim::protos::ttrpc::Error,
    },
}
