//! The scenarios of issue 14, in the order they run, and what they share.

use std::path::PathBuf;

use anyhow::Result;

use crate::results::ScenarioReport;

mod cache_faults;
mod churn;
mod closing;
mod containerd_kill;
mod full_disk;
mod gc_race;
mod shim_kill;
mod unreachable;

/// What every scenario gets: the mode and where long-lived material goes.
pub struct Context {
    pub quick: bool,
    /// `--runs`: overrides each scenario's own count of runs per variant.
    pub runs: Option<usize>,
    /// `<target>/nixlet-reliability`: caches, keys, logs.
    pub work: PathBuf,
}

impl Context {
    /// Runs per variant: `quick` in quick mode, `full` otherwise, unless `--runs` says.
    pub fn runs(&self, quick: usize, full: usize) -> usize {
        self.runs.unwrap_or(if self.quick { quick } else { full })
    }

    /// A fresh directory of the scenario's own below the work directory.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    ShimKill,
    ContainerdKill,
    FullDisk,
    CacheFaults,
    Churn,
    GcRace,
    Unreachable,
}

impl Scenario {
    pub const ALL: &'static [Scenario] = &[
        Scenario::ShimKill,
        Scenario::ContainerdKill,
        Scenario::FullDisk,
        Scenario::CacheFaults,
        Scenario::Churn,
        Scenario::GcRace,
        Scenario::Unreachable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ShimKill => "shim-kill",
            Scenario::ContainerdKill => "containerd-kill",
            Scenario::FullDisk => "full-disk",
            Scenario::CacheFaults => "cache-faults",
            Scenario::Churn => "churn",
            Scenario::GcRace => "gc-race",
            Scenario::Unreachable => "unreachable",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::ShimKill => "The pod's nixlet shim killed in each phase of Create",
            Scenario::ContainerdKill => "containerd killed mid-Create and with pods running",
            Scenario::FullDisk => "A full disk while a closure is unpacked",
            Scenario::CacheFaults => "Binary cache faults",
            Scenario::Churn => "Churn: pods created, started, stopped and removed by the hundred",
            Scenario::GcRace => "Garbage collection while pods start and run",
            Scenario::Unreachable => "Every substituter unreachable, closures on the node",
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Fills `report`; an error ends the scenario (what was recorded until then stays).
    pub fn run(self, ctx: &Context, report: &mut ScenarioReport) -> Result<()> {
        match self {
            Scenario::ShimKill => shim_kill::run(ctx, report),
            Scenario::ContainerdKill => containerd_kill::run(ctx, report),
            Scenario::FullDisk => full_disk::run(ctx, report),
            Scenario::CacheFaults => cache_faults::run(ctx, report),
            Scenario::Churn => churn::run(ctx, report),
            Scenario::GcRace => gc_race::run(ctx, report),
            Scenario::Unreachable => unreachable::run(ctx, report),
        }
    }
}
