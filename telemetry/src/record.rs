//! One line of the record: what one Create did, as a shim saw it.

use serde::{Deserialize, Serialize};

/// The format's version; a reader skips lines of another version.
pub const VERSION: u32 = 1;

/// A line is written with one `write()`; kept short so that it stays one small append.
pub const MAX_LINE_BYTES: usize = 4096;

/// The longest error message a record carries (the CRI error keeps the whole line).
const MAX_MESSAGE_BYTES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// nixlet rewrote the container's spec for its environment.
    Rewritten,
    /// nixlet refused the container.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubstituterFetch {
    pub url: String,
    /// Store paths downloaded and installed from it.
    pub paths: u64,
    /// Their uncompressed NAR size.
    pub nar_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRecord {
    #[serde(rename = "v")]
    pub version: u32,
    /// Unix seconds when Create finished.
    pub at: u64,
    /// The container id containerd gave.
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The environment reference as the pod wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `owner/name:N`, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub outcome: Outcome,
    /// The phase that refused the container (`resolve`, `fetch`, …), for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The `nixlet: …` line the kubelet got, for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the environment was resolved (`None`: resolution was not reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<bool>,
    /// Whole Create preparation, milliseconds.
    pub duration_ms: u64,
    /// The closure fetch, when substituters are configured and the fetch finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchFigures>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FetchFigures {
    pub duration_ms: u64,
    /// Closure paths that were already valid: nothing to download.
    pub already_valid: u64,
    /// Compressed bytes received from all caches, failed attempts included.
    pub bytes_downloaded: u64,
    #[serde(default)]
    pub substituters: Vec<SubstituterFetch>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record version {0} is not {VERSION}")]
    Version(u32),
}

impl CreateRecord {
    /// The JSON line, `\n` included, at most [`MAX_LINE_BYTES`]: a long message is cut (on a
    /// character boundary), then per-substituter detail is dropped if it still does not fit.
    pub fn to_line(&self) -> String {
        let mut record = self.clone();
        if let Some(message) = &mut record.message {
            truncate(message, MAX_MESSAGE_BYTES);
        }
        let mut line = serde_json::to_string(&record).expect("a record serializes");
        if line.len() >= MAX_LINE_BYTES {
            if let Some(message) = &mut record.message {
                truncate(message, 256);
            }
            if let Some(fetch) = &mut record.fetch {
                fetch.substituters.clear();
            }
            line = serde_json::to_string(&record).expect("a record serializes");
        }
        line.push('\n');
        line
    }

    pub fn parse_line(line: &str) -> Result<CreateRecord, ParseError> {
        let record: CreateRecord = serde_json::from_str(line)?;
        if record.version != VERSION {
            return Err(ParseError::Version(record.version));
        }
        Ok(record)
    }
}

fn truncate(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn failed(container: &str, message: &str) -> CreateRecord {
        CreateRecord {
            version: VERSION,
            at: 1_700_000_000,
            container: container.into(),
            container_name: Some("web".into()),
            pod_namespace: Some("default".into()),
            pod_name: Some("shop".into()),
            pod_uid: Some("uid-1".into()),
            reference: Some("acme/web".into()),
            environment: None,
            outcome: Outcome::Failed,
            phase: Some("resolve".into()),
            message: Some(message.into()),
            resolved: Some(false),
            duration_ms: 3,
            fetch: None,
        }
    }

    #[test]
    fn a_record_round_trips_through_one_line() {
        let mut record = failed("c1", "nixlet: resolve acme/web: not found");
        record.fetch = Some(FetchFigures {
            duration_ms: 10,
            already_valid: 2,
            bytes_downloaded: 300,
            substituters: vec![SubstituterFetch {
                url: "http://127.0.0.1:1".into(),
                paths: 3,
                nar_bytes: 1000,
            }],
        });
        let line = record.to_line();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(CreateRecord::parse_line(line.trim_end()).unwrap(), record);
    }

    #[test]
    fn a_long_message_is_cut_to_keep_the_line_small() {
        let record = failed("c1", &"é".repeat(10_000));
        let line = record.to_line();
        assert!(line.len() < MAX_LINE_BYTES, "{}", line.len());
        let parsed = CreateRecord::parse_line(line.trim_end()).unwrap();
        assert!(parsed.message.unwrap().ends_with('…'));
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        assert!(CreateRecord::parse_line("{\"v\":1,\"at\":").is_err());
        assert!(CreateRecord::parse_line("hello").is_err());
        let mut line = failed("c1", "m").to_line();
        line = line.replace("\"v\":1", "\"v\":2");
        assert_eq!(
            CreateRecord::parse_line(line.trim_end())
                .unwrap_err()
                .to_string(),
            "record version 2 is not 1"
        );
    }
}
