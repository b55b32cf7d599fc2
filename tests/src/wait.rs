//! Polling with a deadline: containerd and CRI report state changes asynchronously, so the tests
//! ask again until the answer is there or the deadline has passed.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Calls `probe` every `interval` until it returns `Ok(Some(_))`, an error, or `timeout` passes.
/// `what` names the awaited condition in the timeout error.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(interval);
    }
}
