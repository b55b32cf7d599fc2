//! nixlet's node configuration, read by the shim, the installer, the CLI and the node agent
//! alike, so none of them depends on another just to read a TOML file.

mod node_config;
mod runtime;

pub use node_config::*;
pub use runtime::{
    RuncOptionKind, RuncOptions, RuntimeConfig, DEFAULT_DELEGATE_SHIM, RUNC_OPTION_KEYS,
};
