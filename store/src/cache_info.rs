//! `nix-cache-info`: the cache's store directory and its own priority.

use nixlet_manifest::STORE_DIR;

/// Nix's default when a cache does not state a priority.
pub const DEFAULT_PRIORITY: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub store_dir: String,
    /// Lower is preferred.
    pub priority: u32,
    pub want_mass_query: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheInfoError {
    #[error("nix-cache-info line {line} is not \"Key: value\": {text:?}")]
    MalformedLine { line: usize, text: String },
    #[error("nix-cache-info Priority {value:?} is not a number")]
    InvalidPriority { value: String },
    #[error("nix-cache-info has no StoreDir")]
    MissingStoreDir,
    #[error("the cache is for store directory {store_dir:?}; only {STORE_DIR} is supported")]
    OtherStoreDir { store_dir: String },
}

impl CacheInfo {
    pub fn parse(text: &str) -> Result<CacheInfo, CacheInfoError> {
        let mut store_dir = None;
        let mut priority = DEFAULT_PRIORITY;
        let mut want_mass_query = false;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) =
                line.split_once(':')
                    .ok_or_else(|| CacheInfoError::MalformedLine {
                        line: index + 1,
                        text: line.to_string(),
                    })?;
            let value = value.trim();
            match key {
                "StoreDir" => store_dir = Some(value.to_string()),
                "Priority" => {
                    priority = value.parse().map_err(|_| CacheInfoError::InvalidPriority {
                        value: value.to_string(),
                    })?
                }
                "WantMassQuery" => want_mass_query = value == "1",
                // Unknown keys are for newer Nix versions; they do not change how paths are read.
                _ => {}
            }
        }
        let store_dir = store_dir.ok_or(CacheInfoError::MissingStoreDir)?;
        // Store paths hash the store directory in: a cache for another one has other paths and
        // NARs whose references point elsewhere.
        if store_dir.trim_end_matches('/') != STORE_DIR {
            return Err(CacheInfoError::OtherStoreDir { store_dir });
        }
        Ok(CacheInfo {
            store_dir,
            priority,
            want_mass_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_nixos_org_style() {
        let info =
            CacheInfo::parse("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n").unwrap();
        assert_eq!(info.priority, 40);
        assert!(info.want_mass_query);
    }

    #[test]
    fn what_nix_copy_writes_has_the_default_priority() {
        let info = CacheInfo::parse("StoreDir: /nix/store\n").unwrap();
        assert_eq!(info.priority, DEFAULT_PRIORITY);
        assert!(!info.want_mass_query);
    }

    #[test]
    fn rejects_other_store_dirs_and_garbage() {
        assert_eq!(
            CacheInfo::parse("StoreDir: /gnu/store\n")
                .unwrap_err()
                .to_string(),
            "the cache is for store directory \"/gnu/store\"; only /nix/store is supported"
        );
        assert_eq!(
            CacheInfo::parse("Priority: 10\n").unwrap_err(),
            CacheInfoError::MissingStoreDir
        );
        assert_eq!(
            CacheInfo::parse("StoreDir: /nix/store\nPriority: high\n")
                .unwrap_err()
                .to_string(),
            "nix-cache-info Priority \"high\" is not a number"
        );
        assert!(matches!(
            CacheInfo::parse("<html>"),
            Err(CacheInfoError::MalformedLine { line: 1, .. })
        ));
    }
}
