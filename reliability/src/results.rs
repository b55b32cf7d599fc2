//! What a scenario hands back: one record per run (what was done, whether it behaved, what it
//! left behind, how long recovery took), figures that are not per run (slopes, ratios, waits),
//! and what the numbers mean. Serialized as is into RELIABILITY.json.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nixlet_e2e::machine::Machine;
use serde::{Deserialize, Serialize};

/// One run of one scenario variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The variant (`kill while resolving`, `5xx burst`, `cycle 37`, …).
    pub variant: String,
    /// Whether the run behaved as nixlet must (see the scenario's method).
    pub ok: bool,
    /// What happened, including the error a pod saw when one was expected.
    pub detail: String,
    /// From the fault ending (kill, restart, space freed, cache repaired) until the pod ran.
    pub recovery_ms: Option<f64>,
    /// How long a Create waited before failing, where the scenario bounds it.
    pub wait_ms: Option<f64>,
    /// The bound `wait_ms` was held to.
    pub wait_limit_ms: Option<f64>,
    pub leaks: Vec<String>,
    pub invalid_paths: Vec<String>,
}

impl RunRecord {
    pub fn new(variant: impl Into<String>) -> Self {
        Self {
            variant: variant.into(),
            ok: true,
            detail: String::new(),
            recovery_ms: None,
            wait_ms: None,
            wait_limit_ms: None,
            leaks: Vec::new(),
            invalid_paths: Vec::new(),
        }
    }

    /// Marks the run failed with `why` (added to what is already said).
    pub fn fail(&mut self, why: impl Into<String>) {
        self.ok = false;
        self.note(why);
    }

    pub fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        if self.detail.is_empty() {
            self.detail = what;
        } else {
            self.detail = format!("{}; {what}", self.detail);
        }
    }
}

/// A figure that is not per run: a slope, a ratio, a median time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// The counts of a scenario, as the summary table shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub runs: usize,
    pub failures: usize,
    pub leaks: usize,
    pub invalid_paths: usize,
    pub longest_recovery_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The command-line name (`shim-kill`, …).
    pub name: String,
    pub title: String,
    pub quick: bool,
    /// What was done and what counts as behaving, one sentence each.
    pub method: Vec<String>,
    pub runs: Vec<RunRecord>,
    pub figures: Vec<Figure>,
    /// What the numbers say, including what could not be done and why.
    pub findings: Vec<String>,
    /// Leaks found outside any one run (the node's teardown).
    pub teardown_leaks: Vec<String>,
    /// Set when the scenario could not run to its end.
    pub error: Option<String>,
    pub seconds: f64,
    /// UTC time the scenario finished.
    pub finished: String,
    /// Derived from the runs when the scenario finished (for readers of the JSON).
    pub summary: Option<Summary>,
}

impl ScenarioReport {
    pub fn new(name: &str, title: &str, quick: bool) -> Self {
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            quick,
            method: Vec::new(),
            runs: Vec::new(),
            figures: Vec::new(),
            findings: Vec::new(),
            teardown_leaks: Vec::new(),
            error: None,
            seconds: 0.0,
            finished: String::new(),
            summary: None,
        }
    }

    /// Fills [`Self::summary`] from the runs.
    pub fn summarize(&mut self) {
        self.summary = Some(Summary {
            runs: self.runs.len(),
            failures: self.failures(),
            leaks: self.leaks(),
            invalid_paths: self.invalid_paths(),
            longest_recovery_ms: self.longest_recovery_ms(),
        });
    }

    pub fn figure(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.to_owned(),
        });
    }

    pub fn failures(&self) -> usize {
        self.runs.iter().filter(|r| !r.ok).count() + usize::from(self.error.is_some())
    }

    pub fn leaks(&self) -> usize {
        self.runs.iter().map(|r| r.leaks.len()).sum::<usize>() + self.teardown_leaks.len()
    }

    pub fn invalid_paths(&self) -> usize {
        self.runs.iter().map(|r| r.invalid_paths.len()).sum()
    }

    pub fn longest_recovery_ms(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.recovery_ms)
            .fold(None, |max, r| Some(max.map_or(r, |m: f64| m.max(r))))
    }

    /// One line per thing wrong with this scenario's runs.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(error) = &self.error {
            problems.push(format!("{}: {error}", self.name));
        }
        for run in &self.runs {
            if !run.ok {
                problems.push(format!("{}: {}: {}", self.name, run.variant, run.detail));
            }
            for leak in &run.leaks {
                problems.push(format!("{}: {}: leak: {leak}", self.name, run.variant));
            }
            for path in &run.invalid_paths {
                problems.push(format!("{}: {}: invalid: {path}", self.name, run.variant));
            }
        }
        for leak in &self.teardown_leaks {
            problems.push(format!("{}: teardown: {leak}", self.name));
        }
        problems
    }
}

/// Everything RELIABILITY.json holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub scenarios: BTreeMap<String, ScenarioReport>,
}

impl Results {
    /// The results in `json` if it exists and parses (a run of some scenarios replaces only
    /// theirs), with `machine` updated; else new ones.
    pub fn load_or_new(json: &Path, machine: Machine) -> Self {
        let scenarios = fs::read_to_string(json)
            .ok()
            .and_then(|t| serde_json::from_str::<Results>(&t).ok())
            .map(|r| r.scenarios)
            .unwrap_or_default();
        Self { machine, scenarios }
    }

    pub fn write_json(&self, json: &Path) -> Result<()> {
        fs::write(json, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", json.display()))
    }

    pub fn problems(&self) -> Vec<String> {
        self.scenarios
            .values()
            .flat_map(ScenarioReport::problems)
            .collect()
    }

    /// No failure, leak or invalid path in any scenario.
    pub fn clean(&self) -> bool {
        self.problems().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_runs_and_teardown() {
        let mut report = ScenarioReport::new("x", "X", true);
        let mut good = RunRecord::new("a");
        good.recovery_ms = Some(10.0);
        let mut bad = RunRecord::new("b");
        bad.fail("did not start");
        bad.leaks.push("gc root: k8s.io.1".into());
        bad.invalid_paths.push("/nix/store/x".into());
        bad.recovery_ms = Some(30.0);
        report.runs = vec![good, bad];
        report.teardown_leaks.push("mount: /m".into());
        assert_eq!(report.failures(), 1);
        assert_eq!(report.leaks(), 2);
        assert_eq!(report.invalid_paths(), 1);
        assert_eq!(report.longest_recovery_ms(), Some(30.0));
        assert_eq!(report.problems().len(), 4);
    }
}
