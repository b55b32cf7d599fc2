//! End-to-end harness for nixlet: a private containerd 1.6 with the nixlet shim on its PATH, real
//! Nix store paths built without nixpkgs, OCI images made without a registry, and a CRI client that
//! plays the kubelet.
//!
//! A test builds a [`node::TestNode`]; dropping it (pass, fail or panic) stops every pod, kills
//! containerd and the shims it started, unmounts everything below the node's scratch directory and
//! removes it.
//!
//! Run as root on a host prepared by `scripts/install-deps.sh`:
//! `cargo test -p nixlet-e2e -- --nocapture`. The harness builds `nixlet-shim` itself. Without
//! root or the host tools a test prints `skipping: <why>`, unless `CI=true`, where that fails.
//! Each node's containerd log (which carries the shims' logs) is kept as
//! `<target>/nixlet-e2e-logs/<test>.containerd.log`; a failing test prints its tail.

pub mod agent;
pub mod binary_cache;
pub mod census;
pub mod cgroups;
pub mod containerd;
pub mod containerd_config;
pub mod containerd_version;
pub mod cri;
pub mod env_fixture;
pub mod expect;
pub mod flox;
pub mod http_get;
pub mod http_server;
pub mod images;
pub mod leftovers;
pub mod machine;
pub mod mounts;
pub mod nix_fixture;
pub mod node;
pub mod node_config;
pub mod oci_runtime;
pub mod prereq;
pub mod procs;
pub mod scratch;
pub mod shim_build;
pub mod store_paths;
pub mod sweep;
pub mod wait;
