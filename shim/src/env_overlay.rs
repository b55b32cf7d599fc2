//! What a nixlet container's processes get on top of their own environment.
//!
//! The overlay is computed once per container at Create and applied both to the container's
//! process and to every exec process, so `kubectl exec` sees the same environment as the
//! entrypoint. It points into the environment view, the one directory that merges every
//! installed output (`bin/`, `share/`, `etc/` …).
//!
//! The variables follow Flox's activation of a command (flox repo,
//! `assets/environment-interpreter/activate/activate` and its `etc/profile.d` scripts):
//! both modes get `FLOX_ENV`, `FLOX_ENV_DIRS`, `PATH`, `MANPATH`, `INFOPATH` and
//! `XDG_DATA_DIRS` (`0100_common-run-mode-paths.sh`); `dev` adds what building against the
//! environment needs, `CPATH`, `LIBRARY_PATH`, `PKG_CONFIG_PATH` and `ACLOCAL_PATH`
//! (`0101_common-dev-mode-additional-paths.sh`), and, when the environment has the tool,
//! `PYTHONPATH`, `CMAKE_PREFIX_PATH`, `JAVA_HOME`, `JUPYTER_PATH` and `RUST_SRC_PATH`
//! (`profile.d.functions`, `0501`-`0503`). Flox's `LD_AUDIT` library (`ld-floxlib.so`) and
//! CUDA driver detection are not part of an environment's closure, so nixlet sets neither.
//!
//! A pod has no project directory, so the rest is what `flox containerize` gives a container
//! (flox repo, `mkContainer/mkContainer.nix`, its `attach_ctx`): `FLOX_ENV_CACHE=/tmp`, which
//! hooks use for virtualenvs and caches, and `FLOX_ENV_DESCRIPTION`, the environment's name
//! (here `owner/name`, as Flox describes an environment with an owner); `FLOX_ENV_PROJECT` is not
//! set. Like every variable here, the pod's own value wins, e.g. a `FLOX_ENV_CACHE` on a volume.

use nixlet_manifest::{ActivateMode, ResolvedEnv};

/// Used when the image sets no `PATH`: the same default containerd's CRI plugin and runc use.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The XDG base directory spec's default for `XDG_DATA_DIRS`.
pub const DEFAULT_XDG_DATA_DIRS: &str = "/usr/local/share:/usr/share";

/// Names the environment generation a container runs in.
pub const ENVIRONMENT_VAR: &str = "NIXLET_ENVIRONMENT";

/// The cache directory Flox's containers get (`attach_ctx.env_cache` in `mkContainer.nix`).
pub const FLOX_ENV_CACHE: (&str, &str) = ("FLOX_ENV_CACHE", "/tmp");

/// Where a CA bundle sits in a view when the closure ships one (nixpkgs' `cacert` layout).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-bundle.crt";

/// What exists in the installed view, found on disk at Create (the overlay itself is pure).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ViewFacts {
    /// The view's store path.
    pub path: String,
    pub has_ca_bundle: bool,
    /// Dev-mode tools: what Flox's profile scripts look for before setting their variables.
    pub dev: DevFacts,
}

/// What the `dev` mode's conditional variables depend on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevFacts {
    /// `lib/pythonX.Y/site-packages` of the view's `bin/python3`, relative to the view.
    pub python_site_packages: Option<String>,
    /// `bin/cmake` exists.
    pub has_cmake: bool,
    /// `bin/java` exists.
    pub has_java: bool,
    /// `share/jupyter` exists.
    pub has_jupyter: bool,
    /// `rustc-std-workspace-std` exists (a Rust source tree).
    pub has_rust_src: bool,
}

/// A search-path variable the environment's directories go in front of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepend {
    pub name: String,
    pub dirs: Vec<String>,
    /// What follows the environment's directories when the process does not set the variable.
    pub default: WhenUnset,
}

/// The rest of a search path the process does not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenUnset {
    /// Only the environment's directories, as Flox's `X${OLD:+:$OLD}`.
    Nothing,
    /// `:` and this text; an empty text leaves a trailing `:`, which man and info read as "and
    /// the system's path".
    Append(String),
}

impl From<&str> for WhenUnset {
    fn from(text: &str) -> WhenUnset {
        WhenUnset::Append(text.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOverlay {
    pub prepend: Vec<Prepend>,
    /// Variables set unless the process already sets them (the pod's own env wins).
    pub vars: Vec<(String, String)>,
}

impl EnvOverlay {
    pub fn for_view(env: &ResolvedEnv, view: &ViewFacts, mode: ActivateMode) -> EnvOverlay {
        let root = &view.path;
        let prepend_to = |name: &str, dirs: Vec<String>, default: Option<&str>| Prepend {
            name: name.into(),
            dirs,
            default: default.map_or(WhenUnset::Nothing, WhenUnset::from),
        };
        let mut prepend = vec![
            prepend_to(
                "PATH",
                vec![format!("{root}/bin"), format!("{root}/sbin")],
                Some(DEFAULT_PATH),
            ),
            prepend_to("MANPATH", vec![format!("{root}/share/man")], Some("")),
            prepend_to("INFOPATH", vec![format!("{root}/share/info")], Some("")),
            prepend_to(
                "XDG_DATA_DIRS",
                vec![format!("{root}/share")],
                Some(DEFAULT_XDG_DATA_DIRS),
            ),
        ];
        let mut vars = env.vars.clone();
        if mode == ActivateMode::Dev {
            prepend.extend([
                prepend_to("CPATH", vec![format!("{root}/include")], None),
                prepend_to("LIBRARY_PATH", vec![format!("{root}/lib")], None),
                prepend_to(
                    "PKG_CONFIG_PATH",
                    vec![
                        format!("{root}/lib/pkgconfig"),
                        format!("{root}/share/pkgconfig"),
                    ],
                    None,
                ),
                prepend_to("ACLOCAL_PATH", vec![format!("{root}/share/aclocal")], None),
            ]);
            let dev = &view.dev;
            if let Some(site_packages) = &dev.python_site_packages {
                prepend.push(prepend_to(
                    "PYTHONPATH",
                    vec![format!("{root}/{site_packages}")],
                    None,
                ));
            }
            if dev.has_cmake {
                prepend.push(prepend_to("CMAKE_PREFIX_PATH", vec![root.clone()], None));
            }
            if dev.has_jupyter {
                prepend.push(prepend_to(
                    "JUPYTER_PATH",
                    vec![format!("{root}/share/jupyter")],
                    None,
                ));
            }
            if dev.has_java {
                vars.push(("JAVA_HOME".into(), root.clone()));
            }
            if dev.has_rust_src {
                vars.push(("RUST_SRC_PATH".into(), root.clone()));
            }
        }
        for name in ["FLOX_ENV", "FLOX_ENV_DIRS", "NIXLET_ENV"] {
            vars.push((name.into(), root.clone()));
        }
        vars.push((FLOX_ENV_CACHE.0.into(), FLOX_ENV_CACHE.1.into()));
        vars.push((
            "FLOX_ENV_DESCRIPTION".into(),
            format!("{}/{}", env.reference.owner, env.reference.name),
        ));
        vars.push((ENVIRONMENT_VAR.into(), env.display_name()));
        if view.has_ca_bundle {
            for name in ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"] {
                vars.push((name.into(), format!("{root}/{CA_BUNDLE}")));
            }
        }
        EnvOverlay { prepend, vars }
    }

    /// An overlay that changes nothing: what the exec processes of a container named in
    /// `skip-containers-exec` get.
    pub fn none() -> EnvOverlay {
        EnvOverlay {
            prepend: Vec::new(),
            vars: Vec::new(),
        }
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
                    result.push(prepend.entry(Some(rest)));
                }
                None => result.push(entry.clone()),
            }
            seen.push(key);
        }
        for prepend in &self.prepend {
            if !seen.contains(&prepend.name) {
                result.push(prepend.entry(None));
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
    /// The entry for this variable, given its value in the process (`None`: not set).
    fn entry(&self, existing: Option<&str>) -> String {
        let mut value = self.dirs.join(":");
        let default = match &self.default {
            WhenUnset::Nothing => None,
            WhenUnset::Append(text) => Some(text.as_str()),
        };
        let rest = match existing {
            Some(rest) if !rest.is_empty() => Some(rest),
            // Set but empty: only man and info keep their "and the system's" colon.
            Some(_) => default.filter(|default| default.is_empty()),
            None => default,
        };
        if let Some(rest) = rest {
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
            has_ca_bundle: all,
            dev: if all {
                DevFacts {
                    python_site_packages: Some("lib/python3.12/site-packages".into()),
                    has_cmake: true,
                    has_java: true,
                    has_jupyter: true,
                    has_rust_src: true,
                }
            } else {
                DevFacts::default()
            },
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_mode_sets_the_paths_flox_sets_for_running_programs() {
        let overlay = EnvOverlay::for_view(&env(), &facts(true), ActivateMode::Run);
        let result = overlay.apply(&strings(&["PATH=/usr/bin:/bin", "TERM=xterm", "MANPATH="]));
        assert_eq!(
            result,
            vec![
                format!("PATH={VIEW}/bin:{VIEW}/sbin:/usr/bin:/bin"),
                "TERM=xterm".into(),
                format!("MANPATH={VIEW}/share/man:"),
                format!("INFOPATH={VIEW}/share/info:"),
                format!("XDG_DATA_DIRS={VIEW}/share:{DEFAULT_XDG_DATA_DIRS}"),
                "GREETING=hi".into(),
                "HOME=/env".into(),
                format!("FLOX_ENV={VIEW}"),
                format!("FLOX_ENV_DIRS={VIEW}"),
                format!("NIXLET_ENV={VIEW}"),
                "FLOX_ENV_CACHE=/tmp".into(),
                "FLOX_ENV_DESCRIPTION=acme/web".into(),
                "NIXLET_ENVIRONMENT=acme/web:2".into(),
                format!("SSL_CERT_FILE={VIEW}/{CA_BUNDLE}"),
                format!("NIX_SSL_CERT_FILE={VIEW}/{CA_BUNDLE}"),
            ]
        );
    }

    #[test]
    fn dev_mode_adds_the_build_paths_and_the_tools_variables() {
        let overlay = EnvOverlay::for_view(&env(), &facts(true), ActivateMode::Dev);
        let result = overlay.apply(&strings(&["PKG_CONFIG_PATH=/opt/pc"]));
        for expected in [
            format!("PKG_CONFIG_PATH={VIEW}/lib/pkgconfig:{VIEW}/share/pkgconfig:/opt/pc"),
            format!("CPATH={VIEW}/include"),
            format!("LIBRARY_PATH={VIEW}/lib"),
            format!("ACLOCAL_PATH={VIEW}/share/aclocal"),
            format!("PYTHONPATH={VIEW}/lib/python3.12/site-packages"),
            format!("CMAKE_PREFIX_PATH={VIEW}"),
            format!("JUPYTER_PATH={VIEW}/share/jupyter"),
            format!("JAVA_HOME={VIEW}"),
            format!("RUST_SRC_PATH={VIEW}"),
        ] {
            assert!(result.contains(&expected), "{expected} in {result:?}");
        }
        // Without the tools, only the four build paths.
        let bare = EnvOverlay::for_view(&env(), &facts(false), ActivateMode::Dev).apply(&[]);
        let names: Vec<&str> = bare.iter().map(|e| e.split('=').next().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                "PATH",
                "MANPATH",
                "INFOPATH",
                "XDG_DATA_DIRS",
                "CPATH",
                "LIBRARY_PATH",
                "PKG_CONFIG_PATH",
                "ACLOCAL_PATH",
                "GREETING",
                "HOME",
                "FLOX_ENV",
                "FLOX_ENV_DIRS",
                "NIXLET_ENV",
                "FLOX_ENV_CACHE",
                "FLOX_ENV_DESCRIPTION",
                "NIXLET_ENVIRONMENT"
            ]
        );
        let run = EnvOverlay::for_view(&env(), &facts(true), ActivateMode::Run).apply(&[]);
        assert!(!run
            .iter()
            .any(|e| e.starts_with("CPATH=") || e.starts_with("JAVA_HOME=")));
    }

    #[test]
    fn the_pods_own_env_wins_over_the_environments_vars() {
        let overlay = EnvOverlay::for_view(&env(), &facts(false), ActivateMode::Dev);
        let result = overlay.apply(&strings(&["HOME=/root", "NIXLET_ENV=/mine"]));
        assert!(result.contains(&"HOME=/root".to_string()));
        assert!(result.contains(&"NIXLET_ENV=/mine".to_string()));
        assert!(!result.iter().any(|entry| entry == "HOME=/env"));
    }

    #[test]
    fn certificates_only_when_the_view_has_them() {
        let bare = EnvOverlay::for_view(&env(), &facts(false), ActivateMode::Run).apply(&[]);
        assert!(!bare.iter().any(|entry| entry.starts_with("SSL_CERT_FILE=")));
        assert_eq!(
            bare[0],
            format!("PATH={VIEW}/bin:{VIEW}/sbin:{DEFAULT_PATH}")
        );
    }

    #[test]
    fn an_empty_path_is_replaced_by_the_view_alone() {
        let overlay = EnvOverlay::for_view(&env(), &facts(false), ActivateMode::Run);
        assert_eq!(
            overlay.apply(&strings(&["PATH="]))[0],
            format!("PATH={VIEW}/bin:{VIEW}/sbin")
        );
    }

    #[test]
    fn the_empty_overlay_leaves_an_exec_alone() {
        let env = strings(&["PATH=/bin", "A=1"]);
        assert_eq!(EnvOverlay::none().apply(&env), env);
    }
}
