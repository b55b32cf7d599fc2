//! The two ways Flox activates an environment (flox repo, `cli/flox-core/src/activate/mode.rs`):
//! `dev`, its default, sets the variables a developer's tools need besides `PATH`
//! (`CPATH`, `PKG_CONFIG_PATH`, …), and `run` only what running the programs needs.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActivateMode {
    #[default]
    Dev,
    Run,
}

/// The spellings of the modes, as Flox writes them.
pub const ACTIVATE_MODES: [&str; 2] = ["dev", "run"];

impl FromStr for ActivateMode {
    type Err = ();

    fn from_str(text: &str) -> Result<ActivateMode, ()> {
        match text {
            "dev" => Ok(ActivateMode::Dev),
            "run" => Ok(ActivateMode::Run),
            _ => Err(()),
        }
    }
}

impl fmt::Display for ActivateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActivateMode::Dev => "dev",
            ActivateMode::Run => "run",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_display_as_flox_writes_them() {
        for text in ACTIVATE_MODES {
            assert_eq!(text.parse::<ActivateMode>().unwrap().to_string(), text);
        }
        assert_eq!(ActivateMode::default(), ActivateMode::Dev);
        assert!("build".parse::<ActivateMode>().is_err());
        assert!("Dev".parse::<ActivateMode>().is_err());
    }
}
