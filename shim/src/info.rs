//! `containerd-shim-nixlet-v2 -info`: containerd (1.7+) asks a runtime for its `RuntimeInfo`, and
//! CRI derives each handler's features from it (recursive read-only mounts, user namespaces).
//! nixlet's containers run with the runc shim and the runc options of the node config, so the
//! runc shim's answer for those options is nixlet's answer.

use nixlet_config::NodeConfig;
use prost::Message;
use tokio::io::AsyncReadExt;

use crate::bootstrap::STDIN_LIMIT;
use crate::delegate::{self, DelegateError};
use crate::runtime_options::start_options_for_delegate;

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("read stdin: {0}")]
    Stdin(#[source] std::io::Error),
    #[error("{0}")]
    Config(#[from] nixlet_config::ConfigError),
    #[error("runc options for the runc shim: {0}")]
    Options(#[source] containerd_shim::protos::protobuf::Error),
    #[error("{0}")]
    Delegate(#[from] DelegateError),
}

/// Returns the `RuntimeInfo` bytes to print.
pub async fn run() -> Result<Vec<u8>, InfoError> {
    // containerd sends nixlet's handler options, a wrapper the runc shim cannot read.
    let mut handler_options = Vec::new();
    tokio::io::stdin()
        .take(STDIN_LIMIT)
        .read_to_end(&mut handler_options)
        .await
        .map_err(InfoError::Stdin)?;
    let config = NodeConfig::load()?;
    let options = start_options_for_delegate(None, &config.runtime.runc_options)
        .map_err(InfoError::Options)?;
    let stdin = options.map(|any| any.encode_to_vec()).unwrap_or_default();
    Ok(delegate::info(&config.runtime.delegate_shim, stdin).await?)
}
