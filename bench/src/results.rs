//! What a scenario hands back: its setup, figures and ratios (each over every iteration), and
//! what the numbers mean. Serialized as is into the JSON results.

use serde::{Deserialize, Serialize};

use crate::stats::Summary;

/// One measured quantity over the iterations of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub summary: Option<Summary>,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: &str, samples: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            unit: unit.to_owned(),
            summary: Summary::of(&samples),
            samples,
        }
    }

    /// Per-iteration `numerator[i] / denominator[i]`: a ratio of runs made side by side.
    pub fn ratio(name: impl Into<String>, numerator: &[f64], denominator: &[f64]) -> Self {
        let samples = numerator
            .iter()
            .zip(denominator)
            .filter(|(_, d)| **d != 0.0)
            .map(|(n, d)| n / d)
            .collect();
        Self::new(name, "x", samples)
    }

    pub fn median(&self) -> Option<f64> {
        self.summary.map(|s| s.median)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The command-line name (`cold-fetch`, …).
    pub name: String,
    pub title: String,
    /// What was measured and how, one sentence each.
    pub method: Vec<String>,
    pub quick: bool,
    pub warmup: usize,
    pub iterations: usize,
    pub figures: Vec<Figure>,
    pub ratios: Vec<Figure>,
    /// What the numbers say, including where nixlet loses and why.
    pub findings: Vec<String>,
    /// UTC time the scenario finished.
    pub finished: String,
}

impl ScenarioReport {
    pub fn new(name: &str, title: &str, quick: bool, warmup: usize, iterations: usize) -> Self {
        Self {
            name: name.to_owned(),
            title: title.to_owned(),
            method: Vec::new(),
            quick,
            warmup,
            iterations,
            figures: Vec::new(),
            ratios: Vec::new(),
            findings: Vec::new(),
            finished: String::new(),
        }
    }

    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures
            .iter()
            .chain(&self.ratios)
            .find(|f| f.name == name)
    }
}
