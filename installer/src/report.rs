//! What install or uninstall did, one line per file, for the operator and for tests.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Host path.
    pub path: PathBuf,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Changed(String),
    Unchanged(String),
    /// Left as it is although the operation would normally change it; the text says why.
    Kept(String),
    /// Something the operator should know that changes nothing (a runc option not carried).
    Note(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartOutcome {
    /// containerd's config did not change.
    #[default]
    NotNeeded,
    Restarted,
    /// It changed, but restarting was switched off.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The containerd that reads the config, and how it was learnt (install only).
    pub containerd: Option<String>,
    pub steps: Vec<Step>,
    pub restart: RestartOutcome,
}

impl Report {
    pub fn changed(&self) -> bool {
        self.restart == RestartOutcome::Restarted
            || self
                .steps
                .iter()
                .any(|step| matches!(step.outcome, Outcome::Changed(_)))
    }

    pub(crate) fn push(&mut self, path: impl Into<PathBuf>, outcome: Outcome) {
        let step = Step {
            path: path.into(),
            outcome,
        };
        match &step.outcome {
            Outcome::Changed(what) => {
                tracing::info!(path = %step.path.display(), what = %what, "changed")
            }
            Outcome::Unchanged(what) => {
                tracing::debug!(path = %step.path.display(), what = %what, "unchanged")
            }
            Outcome::Kept(why) => {
                tracing::warn!(path = %step.path.display(), why = %why, "kept")
            }
            Outcome::Note(what) => {
                tracing::info!(path = %step.path.display(), what = %what, "note")
            }
        }
        self.steps.push(step);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(containerd) = &self.containerd {
            writeln!(f, "containerd {containerd}")?;
        }
        for step in &self.steps {
            let (word, text) = match &step.outcome {
                Outcome::Changed(text) => ("changed", text),
                Outcome::Unchanged(text) => ("unchanged", text),
                Outcome::Kept(text) => ("kept", text),
                Outcome::Note(text) => ("note", text),
            };
            writeln!(f, "{word:<9} {}: {text}", step.path.display())?;
        }
        match self.restart {
            RestartOutcome::NotNeeded => writeln!(f, "containerd: config unchanged, not restarted")?,
            RestartOutcome::Restarted => writeln!(f, "containerd: restarted")?,
            RestartOutcome::Skipped => writeln!(
                f,
                "containerd: config changed; restart containerd to load it (restart was switched off)"
            )?,
        }
        if !self.changed() {
            writeln!(f, "nothing changed")?;
        }
        Ok(())
    }
}
