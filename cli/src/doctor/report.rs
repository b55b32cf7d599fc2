//! What `nixlet doctor` found: one line per check, a fix under every problem, a summary, and
//! whether the node is fit to run nixlet pods.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    /// Works, but an operator should know (for example: containerd is not running, so its PATH
    /// is assumed).
    Warn,
    /// nixlet pods will fail on this node until it is fixed.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub status: Status,
    /// What was checked, e.g. `containerd config`.
    pub check: String,
    pub message: String,
    /// What to do about it; every warning and problem has one.
    pub fix: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&mut self, check: &str, message: impl Into<String>) {
        self.push(Status::Ok, check, message.into(), None);
    }

    pub fn warn(&mut self, check: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Status::Warn, check, message.into(), Some(fix.into()));
    }

    pub fn fail(&mut self, check: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.push(Status::Fail, check, message.into(), Some(fix.into()));
    }

    fn push(&mut self, status: Status, check: &str, message: String, fix: Option<String>) {
        self.findings.push(Finding {
            status,
            check: check.to_string(),
            message: one_line(&message),
            fix: fix.as_deref().map(one_line),
        });
    }

    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    pub fn healthy(&self) -> bool {
        self.count(Status::Fail) == 0
    }
}

/// Findings are read line by line (and grepped): a multi-line cause, such as a TOML error
/// with its excerpt, is folded into one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let label = match finding.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{label}  {}: {}", finding.check, finding.message)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        let (warnings, problems) = (self.count(Status::Warn), self.count(Status::Fail));
        writeln!(
            f,
            "{} checks: {} ok, {warnings} warning{}, {problems} problem{}",
            self.findings.len(),
            self.count(Status::Ok),
            if warnings == 1 { "" } else { "s" },
            if problems == 1 { "" } else { "s" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finding_is_one_line_and_problems_carry_their_fix() {
        let mut report = Report::default();
        report.ok("nix store", "/nix/store is writable");
        report.warn("containerd", "not running", "start it");
        report.fail(
            "shim",
            "not on PATH",
            "run `nixlet node install --host-root /`",
        );
        assert!(!report.healthy());
        assert_eq!(
            report.to_string(),
            "ok    nix store: /nix/store is writable\n\
             warn  containerd: not running\n      fix: start it\n\
             FAIL  shim: not on PATH\n      fix: run `nixlet node install --host-root /`\n\
             3 checks: 1 ok, 1 warning, 1 problem\n"
        );
    }
}
