//! nixlet's benchmarks (design.md §9): nixlet measured side by side with what users would use
//! instead, on one machine, in one run. `cargo run --release -p nixlet-bench -- all` sets up
//! everything it needs (a private containerd with the nixlet shim, loopback binary caches,
//! generated closures), runs each scenario several times after a warm-up, prints a table and
//! writes `BENCHMARKS.json` and `BENCHMARKS.md` at the workspace root.
//!
//! Needs root, containerd 1.6, runc and Nix 2.8 (`scripts/install-deps.sh`).

pub mod app_image;
pub mod bench_node;
pub mod cpu_time;
pub mod data_closure;
pub mod file_server;
pub mod image_service;
// Shared with the reliability suite: the machine a run was made on.
pub use nixlet_e2e::machine;
pub mod mount_closure;
pub mod nix_cli;
pub mod pod_start;
pub mod pss;
pub mod registry;
pub mod report;
pub mod results;
pub mod run;
pub mod scenarios;
pub mod settle;
pub mod shim_binary;
pub mod shim_log;
pub mod stats;
pub mod summary;
pub mod variant_images;
pub mod workdir;

pub use run::{run, scenario_names, Options};
