//! How short-lived shims hand their figures to the long-lived node agent.
//!
//! A shim lives as long as its pod, and there are many; the agent (`nixlet node run`) serves the
//! metrics. Each shim appends one JSON line per Create outcome to a file of its own below
//! `<state_dir>/telemetry/` (one `write()` with `O_APPEND`, never waiting on anyone). The agent
//! reads every file from where it stopped, folds the records into its counters, and removes a
//! file once its shim has exited and every line of it was read. So nothing is lost when a shim
//! exits, an agent that starts late still counts what was written before, and a slow or absent
//! agent never holds up a Create.

mod process_identity;
mod reader;
mod record;
mod writer;

pub use process_identity::ProcessIdentity;
pub use reader::{Batch, RecordReader};
pub use record::{
    CreateRecord, FetchFigures, Outcome, ParseError, SubstituterFetch, MAX_LINE_BYTES, VERSION,
};
pub use writer::{append_record, TELEMETRY_DIR};
