//! Where a flake entry of a lock came from: the locked flake reference and the attribute path
//! inside it. Only a node that builds flakes needs it (`nixlet-store`'s `flake_build.rs`); a
//! node that substitutes the entry's outputs from a cache never reads it.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlakeInstallable {
    /// `locked-url`, e.g. `github:owner/repo/<rev>?narHash=…` or `path:/src?narHash=…`.
    pub locked_url: String,
    /// `locked-flake-attr-path`, fully qualified: `packages.x86_64-linux.hello`.
    pub attr_path: String,
}

impl fmt::Display for FlakeInstallable {
    /// `<locked-url>#<attr-path>`, the installable as Nix takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.locked_url, self.attr_path)
    }
}
