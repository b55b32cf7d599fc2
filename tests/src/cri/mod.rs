//! A CRI client acting as the kubelet, over containerd's unix socket.

mod client;
mod log;
mod spec;

pub use client::{Cri, ExecResult, Pod};
pub use log::{parse_log, LogLine};
pub use spec::{ContainerSpec, PodSpec};
