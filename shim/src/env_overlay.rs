//! What a nixlet container's processes get on top of their own environment.
//!
//! The overlay is computed once per container at Create and applied both to the container's
//! process and to every exec process, so `kubectl exec` sees the same environment as the
//! entrypoint. It points into the environment view, the one directory that merges every
//! installed output (`bin/`, `share/`, `etc/` …).

use nixlet_manifest::ResolvedEnv;

/// Used when the image sets no `PATH`: the same default containerd's CRI plugin and runc use.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The XDG base directory spec's default for `XDG_DATA_DIRS`.
pub const DEFAULT_XDG_DATA_DIRS: &str = "/usr/local/share:/usr/share";

/// Names the environment generation a container runs in.
pub const ENVIRONMENT_VAR: &str = "NIXLET_ENVIRONMENT";

/// Where a CA bundle sits in a view when the closure ships one (nixpkgs' `cacert` layout).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-bundle.crt";

/// What exists in the installed view, found on disk at Create (the overlay itself is pure).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewFacts {
    /// The view's store path.
    pub path: String,
    pub has_man: bool,
    pub has_info: bool,
    pub has_ca_bundle: bool,
}

/// A search-path variable the environment's directories go in front of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepend {
    pub name: String,
    pub dirs: Vec<String>,
    /// What follows the environment's directories when the process does not set the variable.
    pub default: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOverlay {
    pub prepend: Vec<Prepend>,
    /// Variables set unless the process already sets them (the pod's own env wins).
    pub vars: Vec<(String, String)>,
}

impl EnvOverlay {
    pub fn for_view(env: &ResolvedEnv, view: &ViewFacts) -> EnvOverlay {
        let root = &view.path;
        let mut prepend = vec![
            Prepend {
                name: "PATH".into(),
                dirs: vec![format!("{root}/bin"), format!("{root}/sbin")],
                default: DEFAULT_PATH.into(),
            },
            Prepend {
                name: "XDG_DATA_DIRS".into(),
                dirs: vec![format!("{root}/share")],
                default: DEFAULT_XDG_DATA_DIRS.into(),
            },
        ];
        if view.has_man {
            // A trailing empty element makes man search its default path too.
            prepend.push(Prepend {
                name: "MANPATH".into(),
                dirs: vec![format!("{root}/share/man")],
                default: String::new(),
            });
        }
        if view.has_info {
            prepend.push(Prepend {
                name: "INFOPATH".into(),
                dirs: vec![format!("{root}/share/info")],
                default: String::new(),
            });
        }
        let mut vars = env.vars.clone();
        for name in ["FLOX_ENV", "NIXLET_ENV"] {
            vars.push((name.into(), root.clone()));
        }
        vars.push((ENVIRONMENT_VAR.into(), env.display_name()));
        if view.has_ca_bundle {
            for name in ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"] {
                vars.push((name.into(), format!("{root}/{CA_BUNDLE}")));
            }
        }
        EnvOverlay { prepend, vars }
    }

    /// The process environment (`KEY=VALUE` entries) with the overlay applied.
    pub fn apply(&self, env: &[String]) -> Vec<String> {
        let key_of = |entry: &str| {
            entry
                .split_once('=')
                .map_or(entry, |(key, _)| key)
                .to_string()
        };
        let mut result: Vec<String> = Vec::with_capacity(env.len() + self.vars.len() + 4);
        let mut seen = Vec::new();
        for entry in env {
            let key = key_of(entry);
            match self.prepend.iter().find(|prepend| prepend.name == key) {
                Some(prepend) => {
                    let rest = entry.split_once('=').map_or("", |(_, value)| value);
                    result.push(prepend.entry(rest));
                }
                None => result.push(entry.clone()),
            }
            seen.push(key);
        }
        for prepend in &self.prepend {
            if !seen.contains(&prepend.name) {
                result.push(prepend.entry(&prepend.default));
            }
        }
        for (name, value) in &self.vars {
            if !seen.contains(name) {
                result.push(format!("{name}={value}"));
                seen.push(name.clone());
            }
        }
        result
    }
}

impl Prepend {
    fn entry(&self, rest: &str) -> String {
        let mut value = self.dirs.join(":");
        if !rest.is_empty() || self.default.is_empty() {
            // An empty default keeps a trailing ':' (man/info: "and the system's").
            value.push(':');
            value.push_str(rest);
        }
        format!("{}={value}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nixlet_manifest::{ContainerizeConfig, EnvRef, Profile};

    const VIEW: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-nixlet-env-acme-web";

    fn env() -> ResolvedEnv {
        ResolvedEnv {
            reference: EnvRef::parse("acme/web").unwrap(),
            generation: 2,
            packages: vec![],
            vars: vec![
                ("GREETING".into(), "hi".into()),
                ("HOME".into(), "/env".into()),
            ],
            hook_on_activate: None,
            profile: Profile::default(),
            containerize: ContainerizeConfig::default(),
            activate_mode: None,
            included: vec![],
            warnings: vec![],
            manifest_lock: None,
            lock_digest: None,
        }
    }

    fn facts(all: bool) -> ViewFacts {
        ViewFacts {
            path: VIEW.into(),
            has_man: all,
            has_info: all,
            has_ca_bundle: all,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn view_directories_go_first_and_vars_follow() {
        let overlay = EnvOverlay::for_view(&env(), &facts(false));
        let result = overlay.apply(&strings(&["PATH=/usr/bin:/bin", "TERM=xterm"]));
        assert_eq!(
            result,
            vec![
                format!("PATH={VIEW}/bin:{VIEW}/sbin:/usr/bin:/bin"),
                "TERM=xterm".into(),
                format!("XDG_DATA_DIRS={VIEW}/share:{DEFAULT_XDG_DATA_DIRS}"),
                "GREETING=hi".into(),
                "HOME=/env".into(),
                format!("FLOX_ENV={VIEW}"),
                format!("NIXLET_ENV={VIEW}"),
                "NIXLET_ENVIRONMENT=acme/web:2".into(),
            ]
        );
    }

    #[test]
    fn the_pods_own_env_wins_over_the_environments_vars() {
        let overlay = EnvOverlay::for_view(&env(), &facts(false));
        let result = overlay.apply(&strings(&["HOME=/root", "NIXLET_ENV=/mine"]));
        assert!(result.contains(&"HOME=/root".to_string()));
        assert!(result.contains(&"NIXLET_ENV=/mine".to_string()));
        assert!(!result.iter().any(|entry| entry == "HOME=/env"));
    }

    #[test]
    fn man_info_and_certificates_only_when_the_view_has_them() {
        let overlay = EnvOverlay::for_view(&env(), &facts(true));
        let result = overlay.apply(&[]);
        assert!(result.contains(&format!("MANPATH={VIEW}/share/man:")));
        assert!(result.contains(&format!("INFOPATH={VIEW}/share/info:")));
        assert!(result.contains(&format!("SSL_CERT_FILE={VIEW}/{CA_BUNDLE}")));
        assert!(result.contains(&format!("NIX_SSL_CERT_FILE={VIEW}/{CA_BUNDLE}")));
        assert_eq!(
            result[0],
            format!("PATH={VIEW}/bin:{VIEW}/sbin:{DEFAULT_PATH}")
        );
        let bare = EnvOverlay::for_view(&env(), &facts(false)).apply(&[]);
        assert!(!bare
            .iter()
            .any(|entry| entry.starts_with("MANPATH=") || entry.starts_with("SSL_CERT_FILE=")));
    }

    #[test]
    fn an_empty_path_is_replaced_by_the_view_alone() {
        let overlay = EnvOverlay::for_view(&env(), &facts(false));
        assert_eq!(
            overlay.apply(&strings(&["PATH="]))[0],
            format!("PATH={VIEW}/bin:{VIEW}/sbin")
        );
    }
}
