//! The shim's side: one append per Create outcome, to a file only this process writes.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::process_identity::ProcessIdentity;
use crate::record::CreateRecord;

/// Below the node config's `state_dir`.
pub const TELEMETRY_DIR: &str = "telemetry";

/// Appends `record` to this process's file below `dir` with one `write()` on an `O_APPEND`
/// descriptor: another process's lines never interleave with it (each has its own file), and a
/// reader sees either the whole line or, if the disk fills mid-write, a torn tail it skips.
/// Returns the file written.
pub fn append_record(dir: &Path, record: &CreateRecord) -> std::io::Result<PathBuf> {
    static ME: OnceLock<Result<ProcessIdentity, String>> = OnceLock::new();
    let me = ME
        .get_or_init(|| ProcessIdentity::current().map_err(|error| error.to_string()))
        .clone()
        .map_err(std::io::Error::other)?;
    DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let path = dir.join(me.file_name());
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&path)?;
    let line = record.to_line();
    let written = file.write(line.as_bytes())?;
    if written != line.len() {
        return Err(std::io::Error::other(format!(
            "short write to {}: {written} of {} bytes",
            path.display(),
            line.len()
        )));
    }
    Ok(path)
}
