//! The one line a user sees when nixlet refuses a container.
//!
//! containerd hands the shim's error text to the kubelet, which shows it in
//! `kubectl describe pod`; so it must be one readable line that starts with `nixlet:`, names the
//! phase and the environment, and carries the whole cause chain without debug formatting.

use std::error::Error;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the node config.
    Config,
    /// Annotation, environment source and manifest.
    Resolve,
    /// Getting the closure onto the node from the substituters.
    Fetch,
    /// Checking what a substituter sent: signature, hashes, content address, NAR structure.
    Verify,
    /// Putting paths into the node store: unpack, rename, register, the view, the GC root.
    Install,
    /// Changing the bundle's `config.json`.
    Rewrite,
    /// Handing the container to the runc shim.
    Delegate,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Config => "config",
            Phase::Resolve => "resolve",
            Phase::Fetch => "fetch",
            Phase::Verify => "verify",
            Phase::Install => "install",
            Phase::Rewrite => "rewrite",
            Phase::Delegate => "delegate",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateError {
    pub phase: Phase,
    /// The environment reference as the pod wrote it, once it is known to be one.
    pub reference: Option<String>,
    pub cause: String,
}

impl CreateError {
    pub fn new(phase: Phase, reference: Option<String>, cause: &dyn Error) -> CreateError {
        CreateError {
            phase,
            reference,
            cause: cause_chain(cause),
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = without_percent_signs(&self.cause);
        match &self.reference {
            Some(reference) => write!(
                f,
                "nixlet: {} {}: {cause}",
                self.phase,
                without_percent_signs(reference)
            ),
            None => write!(f, "nixlet: {}: {cause}", self.phase),
        }
    }
}

/// `text` with no `%` left: containerd 1.6 passes a shim's error message to Go's `Errorf` as the
/// format string, on each hop, so `%2f` in a flake URL reached the kubelet as
/// `%!!(MISSING)f(MISSING)`. Escapes of printable ASCII (URLs) are decoded, which keeps them
/// readable; any other `%` becomes the fullwidth `％`, which Go leaves alone.
pub fn without_percent_signs(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .filter(|byte| byte.is_ascii_graphic() && *byte != b'%');
            match decoded {
                Some(byte) => {
                    out.push(byte as char);
                    i += 3;
                }
                None => {
                    out.push('％');
                    i += 1;
                }
            }
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl Error for CreateError {}

/// The error and its sources on one line, skipping a source whose text the outer message
/// already includes (many of our errors embed their source).
pub fn cause_chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = inner.source();
    }
    line.lines()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Embedding(#[source] std::io::Error);

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn no_percent_sign_reaches_containerd() {
        assert_eq!(
            without_percent_signs("flake path:/a?narHash=sha256-Cb%2fQL%2Bd=#x: 100% é %25 %zz"),
            "flake path:/a?narHash=sha256-Cb/QL+d=#x: 100％ é ％25 ％zz"
        );
    }

    #[test]
    fn names_phase_and_reference() {
        let error = CreateError::new(Phase::Fetch, Some("acme/web:2".into()), &Outer(io()));
        assert_eq!(
            error.to_string(),
            "nixlet: fetch acme/web:2: outer: no such file"
        );
    }

    #[test]
    fn without_a_reference_names_the_phase_only() {
        let error = CreateError::new(Phase::Resolve, None, &io());
        assert_eq!(error.to_string(), "nixlet: resolve: no such file");
    }

    #[test]
    fn an_embedded_source_is_not_repeated() {
        assert_eq!(cause_chain(&Embedding(io())), "outer: no such file");
    }

    #[test]
    fn multi_line_causes_become_one_line() {
        let error = std::io::Error::other("TOML parse error at line 1\n  |\n1 | x");
        assert_eq!(cause_chain(&error), "TOML parse error at line 1 | 1 | x");
    }
}
