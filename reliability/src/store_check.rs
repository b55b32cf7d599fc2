//! Invalid store paths: of everything a scenario's pods may have made nixlet install, each path
//! that is on disk must be registered and hash to what the Nix database says, and each
//! registered one must be on disk (`nix-store --verify-path`). A partial path at a final name
//! shows up as present but not registered.

use nixlet_e2e::store_paths::invalid_reason;

/// One line per invalid path among `paths`.
pub fn invalid_paths(paths: &[String]) -> Vec<String> {
    paths.iter().filter_map(|p| invalid_reason(p)).collect()
}
