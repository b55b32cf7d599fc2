//! A shim's answer to `start`, in each form containerd accepts, and nixlet's own answer.
//!
//! containerd (`core/runtime/v2/shim.go`, `parseStartResponse`) reads, in this order: a protobuf
//! `BootstrapResult` (2.3+ shims), JSON `{"version":N,"address":…,"protocol":…}` (1.7 – 2.2
//! shims; the 2.x runc shim answers version 3), or the plain socket address (1.6, meaning task
//! API v2 over ttrpc). The three never look alike: a protobuf answer starts with a field tag
//! byte, JSON with `{`, an address with `unix://` or `/`.

use prost::Message;
use serde::Deserialize;

use super::messages::BootstrapResult;
use super::start_input::StartInput;
use super::{ShimEndpoint, TaskApi};

/// nixlet serves task API v2 (what the shim library it is built on generates), which every
/// containerd from 1.6 to 2.x speaks.
const NIXLET_TASK_API: TaskApi = TaskApi::V2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("answered nothing")]
    Empty,
    #[error("answered task API version {version}, which nixlet does not speak (it speaks 2 and 3); the answer was {received}")]
    UnsupportedVersion { version: i64, received: String },
    #[error("answered protocol {protocol:?}, which nixlet does not speak (only ttrpc); the answer was {received}")]
    UnsupportedProtocol { protocol: String, received: String },
    #[error("answered something that is neither a socket address, a JSON bootstrap result nor a protobuf BootstrapResult: {received}")]
    Unreadable { received: String },
}

#[derive(Deserialize)]
struct JsonAnswer {
    #[serde(default)]
    version: i64,
    #[serde(default)]
    address: String,
    #[serde(default)]
    protocol: String,
}

/// Reads what a shim's `start` printed.
pub fn parse_shim_answer(output: &[u8]) -> Result<ShimEndpoint, AnswerError> {
    let text = std::str::from_utf8(output).map(str::trim).unwrap_or("");
    if output.iter().all(u8::is_ascii_whitespace) {
        return Err(AnswerError::Empty);
    }
    if text.starts_with('{') {
        let answer: JsonAnswer = serde_json::from_str(text).map_err(|_| unreadable(output))?;
        return endpoint(answer.version, answer.address, &answer.protocol, output);
    }
    if is_plain_address(text) {
        return Ok(ShimEndpoint {
            address: text.to_string(),
            task_api: TaskApi::V2,
        });
    }
    let result = BootstrapResult::decode(output).map_err(|_| unreadable(output))?;
    endpoint(
        result.version.into(),
        result.address,
        &result.protocol,
        output,
    )
}

/// What nixlet prints at the end of `start`: the form its caller reads.
pub fn answer_for(input: &StartInput, address: &str) -> Vec<u8> {
    match input {
        StartInput::Legacy { .. } => address.as_bytes().to_vec(),
        StartInput::Bootstrap(_) => BootstrapResult {
            version: NIXLET_TASK_API.version(),
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

fn endpoint(
    version: i64,
    address: String,
    protocol: &str,
    output: &[u8],
) -> Result<ShimEndpoint, AnswerError> {
    let task_api =
        TaskApi::from_version(version).ok_or_else(|| AnswerError::UnsupportedVersion {
            version,
            received: printable(output),
        })?;
    if !protocol.eq_ignore_ascii_case("ttrpc") {
        return Err(AnswerError::UnsupportedProtocol {
            protocol: protocol.to_string(),
            received: printable(output),
        });
    }
    if !is_plain_address(&address) {
        return Err(unreadable(output));
    }
    Ok(ShimEndpoint { address, task_api })
}

fn is_plain_address(text: &str) -> bool {
    (text.starts_with("unix://") || text.starts_with('/'))
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn unreadable(output: &[u8]) -> AnswerError {
    AnswerError::Unreadable {
        received: printable(output),
    }
}

/// The answer as it can go into an error line: quoted, escaped, at most 200 characters.
fn printable(output: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text: String = String::from_utf8_lossy(output)
        .chars()
        .take(LIMIT)
        .collect();
    let ellipsis = if output.len() > LIMIT { "…" } else { "" };
    format!("{:?}{ellipsis}", text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::BootstrapParams;

    const ADDRESS: &str = "unix:///run/containerd/s/0123abcd";

    #[test]
    fn a_plain_address_is_task_api_v2() {
        let expected = ShimEndpoint {
            address: ADDRESS.into(),
            task_api: TaskApi::V2,
        };
        assert_eq!(parse_shim_answer(ADDRESS.as_bytes()), Ok(expected.clone()));
        assert_eq!(
            parse_shim_answer(format!("{ADDRESS}\n").as_bytes()),
            Ok(expected)
        );
    }

    #[test]
    fn json_answers_carry_their_version() {
        let v3 = format!(r#"{{"version":3,"address":"{ADDRESS}","protocol":"ttrpc"}}"#);
        assert_eq!(
            parse_shim_answer(v3.as_bytes()).unwrap().task_api,
            TaskApi::V3
        );
        let v2 = format!(r#"{{"version":2,"address":"{ADDRESS}","protocol":"ttrpc"}}"#);
        assert_eq!(
            parse_shim_answer(v2.as_bytes()).unwrap(),
            ShimEndpoint {
                address: ADDRESS.into(),
                task_api: TaskApi::V2
            }
        );
    }

    #[test]
    fn protobuf_answers_are_read_like_containerd_2_3_reads_them() {
        let result = BootstrapResult {
            version: 3,
            address: ADDRESS.into(),
            protocol: "ttrpc".into(),
            ..Default::default()
        };
        assert_eq!(
            parse_shim_answer(&result.encode_to_vec()).unwrap(),
            ShimEndpoint {
                address: ADDRESS.into(),
                task_api: TaskApi::V3
            }
        );
    }

    #[test]
    fn unknown_versions_and_protocols_name_what_was_received() {
        let v4 = format!(r#"{{"version":4,"address":"{ADDRESS}","protocol":"ttrpc"}}"#);
        let error = parse_shim_answer(v4.as_bytes()).unwrap_err();
        assert!(matches!(
            error,
            AnswerError::UnsupportedVersion { version: 4, .. }
        ));
        assert!(error.to_string().contains(r#"\"version\":4"#), "{error}");

        let grpc = BootstrapResult {
            version: 3,
            address: ADDRESS.into(),
            protocol: "grpc".into(),
            ..Default::default()
        };
        assert!(matches!(
            parse_shim_answer(&grpc.encode_to_vec()),
            Err(AnswerError::UnsupportedProtocol { .. })
        ));
    }

    #[test]
    fn garbage_and_silence_are_errors() {
        assert_eq!(parse_shim_answer(b""), Err(AnswerError::Empty));
        assert_eq!(parse_shim_answer(b" \n"), Err(AnswerError::Empty));
        assert!(matches!(
            parse_shim_answer(b"{not json"),
            Err(AnswerError::Unreadable { .. })
        ));
        assert!(matches!(
            parse_shim_answer(b"shim: some error text"),
            Err(AnswerError::Unreadable { .. })
        ));
    }

    #[test]
    fn nixlet_answers_each_caller_in_its_own_form() {
        let legacy = StartInput::Legacy { options: None };
        assert_eq!(answer_for(&legacy, ADDRESS), ADDRESS.as_bytes());

        let bootstrap = StartInput::Bootstrap(BootstrapParams::default());
        let answer = answer_for(&bootstrap, ADDRESS);
        let result = BootstrapResult::decode(&*answer).unwrap();
        assert_eq!(
            (
                result.version,
                result.address.as_str(),
                result.protocol.as_str()
            ),
            (2, ADDRESS, "ttrpc")
        );
        // and nixlet reads its own answers back
        assert_eq!(parse_shim_answer(&answer).unwrap().task_api, TaskApi::V2);
    }
}
