//! End-to-end harness for nixlet: a private containerd 1.6 with the nixlet shim on its PATH, real
//! Nix store paths built without nixpkgs, OCI images made without a registry, and a CRI client that
//! plays the kubelet.
//!
//! A test builds a [`node::TestNode`]; dropping it (pass, fail or panic) stops every pod, kills
//! containerd and the shims it started, unmounts everything below the node's scratch directory and
//! removes it.

pub mod cgroups;
pub mod containerd;
pub mod containerd_config;
pub mod cri;
pub mod images;
pub mod mounts;
pub mod nix_fixture;
pub mod node;
pub mod node_config;
pub mod prereq;
pub mod procs;
pub mod scratch;
pub mod shim_build;
pub mod wait;
