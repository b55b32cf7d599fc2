//! How a containerd shim is started and how it answers, in every form containerd has used:
//!
//! | containerd | nixlet is started with                      | a shim may answer             |
//! | ---------- | ------------------------------------------- | ----------------------------- |
//! | 1.6        | flags, env, runtime options (`Any`) on stdin | a plain socket address        |
//! | 1.7 – 2.2  | the same                                    | address, or JSON `{version…}` |
//! | 2.3 +      | the same flags and `BootstrapParams` on stdin | protobuf `BootstrapResult`, or the older forms |
//!
//! nixlet speaks each direction twice: as the shim containerd started ([`StartInput`],
//! [`answer_for`]), and as the caller of the runc shim it delegates to
//! ([`StartInput::for_delegate`], [`parse_shim_answer`]).

mod messages;
mod shim_answer;
mod socket;
mod start_input;

pub use messages::{BootstrapParams, BootstrapResult, Extension, LOG_LEVEL_DEBUG};
pub use shim_answer::{answer_for, parse_shim_answer, AnswerError};
pub use socket::{socket_address, DEFAULT_SOCKET_ROOT};
pub use start_input::{StartInput, STDIN_LIMIT};

/// The ttrpc task service a shim serves. The messages of v2 and v3 are the same; only the
/// service name differs (containerd 2.x's runc shim serves v3 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    V2,
    V3,
}

impl TaskApi {
    pub fn from_version(version: i64) -> Option<TaskApi> {
        match version {
            2 => Some(TaskApi::V2),
            3 => Some(TaskApi::V3),
            _ => None,
        }
    }

    pub fn version(self) -> i32 {
        match self {
            TaskApi::V2 => 2,
            TaskApi::V3 => 3,
        }
    }

    pub fn service(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }
}

impl std::fmt::Display for TaskApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task API v{}", self.version())
    }
}

/// Where a started shim serves its task API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimEndpoint {
    /// `unix:///run/containerd/s/<hash>`.
    pub address: String,
    pub task_api: TaskApi,
}
