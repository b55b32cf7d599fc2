//! The scenarios of design.md §9, in the order they run, and what they share.

use anyhow::Result;

use crate::results::ScenarioReport;
use crate::workdir::Workdir;

mod cold_fetch;
mod cold_start;
mod disk;
mod many_pods;
mod memory;
mod mount_scaling;
mod warm_start;

/// What every scenario gets: the mode and where long-lived material is kept.
pub struct Context {
    pub quick: bool,
    pub work: Workdir,
    /// `--iterations`: overrides each scenario's own count of measured runs.
    pub iterations: Option<usize>,
}

impl Context {
    /// (warm-up runs, measured runs): one measured run and no warm-up in quick mode.
    pub fn runs(&self, warmup: usize, iterations: usize) -> (usize, usize) {
        if self.quick {
            (0, self.iterations.unwrap_or(1))
        } else {
            (warmup, self.iterations.unwrap_or(iterations))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    ColdFetch,
    ColdStart,
    WarmStart,
    MountScaling,
    Memory,
    ManyPods,
    Disk,
}

impl Scenario {
    /// In design.md §9's order.
    pub const ALL: &'static [Scenario] = &[
        Scenario::ColdFetch,
        Scenario::ColdStart,
        Scenario::WarmStart,
        Scenario::MountScaling,
        Scenario::Memory,
        Scenario::ManyPods,
        Scenario::Disk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ColdFetch => "cold-fetch",
            Scenario::ColdStart => "cold-start",
            Scenario::ManyPods => "many-pods",
            Scenario::Disk => "disk",
            Scenario::WarmStart => "warm-start",
            Scenario::MountScaling => "mount-scaling",
            Scenario::Memory => "memory",
        }
    }

    /// Whether it starts pods (and so needs the nixlet shim built).
    pub fn needs_node(self) -> bool {
        self != Scenario::ColdFetch
    }

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// What the figures of a finished report mean; `nixlet-bench report` re-derives these from
    /// BENCHMARKS.json when the wording changes, without measuring again.
    pub fn findings(self, report: &ScenarioReport) -> Vec<String> {
        match self {
            Scenario::ColdFetch => cold_fetch::findings(report),
            Scenario::ColdStart => cold_start::findings(report),
            Scenario::WarmStart => warm_start::findings(report),
            Scenario::MountScaling => mount_scaling::findings(report),
            Scenario::Memory => memory::findings(report),
            Scenario::ManyPods => many_pods::findings(report),
            Scenario::Disk => disk::findings(report),
        }
    }

    pub fn run(self, ctx: &Context) -> Result<ScenarioReport> {
        match self {
            Scenario::ColdFetch => cold_fetch::run(ctx),
            Scenario::ColdStart => cold_start::run(ctx),
            Scenario::ManyPods => many_pods::run(ctx),
            Scenario::Disk => disk::run(ctx),
            Scenario::WarmStart => warm_start::run(ctx),
            Scenario::MountScaling => mount_scaling::run(ctx),
            Scenario::Memory => memory::run(ctx),
        }
    }
}

/// Scenarios of design.md §9 this harness does not measure yet, for BENCHMARKS.md.
pub const MISSING: &[(&str, &str)] = &[];
