//! What nixlet's fuzzers run: one function per kind of hostile input, each feeding arbitrary
//! bytes to the public parsing and validation API that meets that input in production, and
//! checking what must hold whatever the bytes (a panic is a bug; so is a broken invariant).
//!
//! The same functions serve two callers: the libFuzzer binaries in `fuzz/libfuzzer/` (built
//! with coverage instrumentation, see `fuzz/run.sh`), and `tests/replay.rs`, which runs every
//! saved input (`corpus/<target>/`, `regressions/<target>/`) through them under plain
//! `cargo test`, so a fixed crash stays fixed on the stable toolchain and in CI.

mod environment;
mod http_answers;
mod nar;
mod narinfo;
mod node_config;
mod scratch;

pub use environment::{annotations, manifest_lock, manifest_toml, netrc};
pub use http_answers::http_source;
pub use nar::{nar_stream, nar_unpack};
pub use narinfo::narinfo;
pub use node_config::node_config;

/// A fuzz target: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by the name its corpus and regression folders use.
pub const TARGETS: &[(&str, Target)] = &[
    ("narinfo", narinfo),
    ("nar_unpack", nar_unpack),
    ("nar_stream", nar_stream),
    ("manifest_toml", manifest_toml),
    ("manifest_lock", manifest_lock),
    ("annotations", annotations),
    ("node_config", node_config),
    ("netrc", netrc),
    ("http_source", http_source),
];
