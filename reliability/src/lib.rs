//! nixlet's reliability suite (issue 14): what happens to pods, the node and the store when the
//! pod's shim is killed mid-Create, containerd dies, the disk fills, binary caches misbehave,
//! pods churn by the hundred and garbage collection runs under them. Each scenario runs against
//! a real containerd with the nixlet shim, real runc and real Nix-made binary caches on loopback
//! (the e2e harness, `nixlet-e2e`), and counts per run: failures, leaks (what a pod can leave
//! on a node: shim processes, mounts, sockets, GC roots, store trees, store temporaries,
//! telemetry files, the node agent's descriptors and memory), invalid store paths, and how long
//! recovery took.
//!
//! `cargo run -p nixlet-reliability -- all` writes `RELIABILITY.json` and `RELIABILITY.md` at
//! the workspace root; `--quick` does a few iterations of each (what `scripts/test.sh` runs).
//! Needs root, containerd, runc and Nix (`scripts/install-deps.sh`).

pub mod db_write_lock;
pub mod flock_hold;
pub mod hostile_input;
pub mod kubelet;
pub mod rel_node;
pub mod remote_envs;
pub mod report;
pub mod results;
pub mod run;
pub mod runc_gate;
pub mod scenarios;
pub mod slope;
pub mod store_check;

pub use results::Results;
pub use run::{run, scenario_names, Options};
