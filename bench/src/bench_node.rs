//! The e2e harness's test node as the bench uses it: a private containerd with the nixlet shim,
//! plus the substituter a cold start fetches from.

use anyhow::Result;
use nixlet_e2e::node::{Shim, TestNode};

pub const ENVIRONMENT: &str = "nixlet.dev/environment";

pub fn start(name: &str) -> Result<TestNode> {
    TestNode::start(name, Shim::Built)
}

/// Names one binary cache in the node config: Creates from now on fetch missing closures
/// from it.
pub fn set_substituter(node: &TestNode, url: &str, public_key: &str) -> Result<()> {
    node.set_node_config_extra(&format!(
        "[[substituters]]\nurl = \"{url}\"\ntrusted_keys = [\"{public_key}\"]\n"
    ))
}

/// Tears the node down; a dirty teardown is reported, not fatal (the numbers are taken).
pub fn finish(node: TestNode, name: &str) {
    if let Err(e) = node.finish() {
        eprintln!("nixlet-bench: {name}: teardown: {e:#}");
    }
}
