//! What a nixlet container's processes get on top of their own environment.
//!
//! The overlay is computed once per container at Create and applied both to the container's
//! process and to every exec process, so `kubectl exec` sees the same `PATH` as the entrypoint.

use nixlet_manifest::ResolvedEnv;

/// Used when the image sets no `PATH`: the same default containerd's CRI plugin and runc use.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names the environment a container runs in, for `env` inside the pod and for debugging.
pub const ENVIRONMENT_VAR: &str = "NIXLET_ENVIRONMENT";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOverlay {
    /// Directories put before the process's own `PATH`, highest priority first.
    pub path_prefix: Vec<String>,
    /// Variables set unless the process already sets them (the pod's own env wins).
    pub vars: Vec<(String, String)>,
}

impl EnvOverlay {
    pub fn for_environment(env: &ResolvedEnv) -> EnvOverlay {
        let mut path_prefix = Vec::new();
        for path in env.store_paths() {
            for dir in ["bin", "sbin"] {
                path_prefix.push(format!("{path}/{dir}"));
            }
        }
        let mut vars = env.vars.clone();
        vars.push((ENVIRONMENT_VAR.to_string(), env.display_name()));
        EnvOverlay { path_prefix, vars }
    }

    /// The process environment (`KEY=VALUE` entries) with the overlay applied.
    pub fn apply(&self, env: &[String]) -> Vec<String> {
        let mut result: Vec<String> = Vec::with_capacity(env.len() + self.vars.len() + 1);
        let mut saw_path = false;
        for entry in env {
            match entry.split_once('=') {
                Some(("PATH", value)) => {
                    saw_path = true;
                    result.push(self.path_entry(value));
                }
                _ => result.push(entry.clone()),
            }
        }
        if !saw_path {
            result.push(self.path_entry(DEFAULT_PATH));
        }
        for (name, value) in &self.vars {
            let already_set = env
                .iter()
                .any(|entry| entry.split_once('=').map(|(key, _)| key) == Some(name.as_str()));
            if !already_set {
                result.push(format!("{name}={value}"));
            }
        }
        result
    }

    fn path_entry(&self, rest: &str) -> String {
        let mut parts: Vec<&str> = self.path_prefix.iter().map(String::as_str).collect();
        if !rest.is_empty() {
            parts.push(rest);
        }
        format!("PATH={}", parts.join(":"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay() -> EnvOverlay {
        EnvOverlay {
            path_prefix: vec![
                "/nix/store/a-hello/bin".into(),
                "/nix/store/a-hello/sbin".into(),
            ],
            vars: vec![
                ("GREETING".into(), "hi".into()),
                ("HOME".into(), "/env".into()),
            ],
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_is_prefixed_and_vars_are_added() {
        let env = overlay().apply(&strings(&["PATH=/usr/bin:/bin", "TERM=xterm"]));
        assert_eq!(
            env,
            strings(&[
                "PATH=/nix/store/a-hello/bin:/nix/store/a-hello/sbin:/usr/bin:/bin",
                "TERM=xterm",
                "GREETING=hi",
                "HOME=/env",
            ])
        );
    }

    #[test]
    fn the_pods_own_env_wins_over_the_environments_vars() {
        let env = overlay().apply(&strings(&["HOME=/root", "PATH=/bin"]));
        assert_eq!(
            env,
            strings(&[
                "HOME=/root",
                "PATH=/nix/store/a-hello/bin:/nix/store/a-hello/sbin:/bin",
                "GREETING=hi",
            ])
        );
    }

    #[test]
    fn missing_path_gets_the_default_after_the_environment() {
        let env = overlay().apply(&[]);
        assert_eq!(
            env[0],
            format!("PATH=/nix/store/a-hello/bin:/nix/store/a-hello/sbin:{DEFAULT_PATH}")
        );
    }

    #[test]
    fn empty_path_is_replaced_by_the_prefix_alone() {
        let env = overlay().apply(&strings(&["PATH="]));
        assert_eq!(
            env[0],
            "PATH=/nix/store/a-hello/bin:/nix/store/a-hello/sbin"
        );
    }
}
