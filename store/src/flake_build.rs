//! Building an environment's flake packages on the node, the last resort of a closure fetch.
//!
//! A lock's flake entry names the store paths of its outputs *and* the locked flake they were
//! evaluated from (`locked-url`, `locked-flake-attr-path`). When no cache has those outputs, a
//! `nix-cli` substituter with `build_flakes = true` runs
//! `nix build --no-link --json '<locked-url>#<attr-path>.<output>' …` under its timeout, in a
//! process group killed whole on expiry (`nix_cli_backend.rs`), and nixlet then checks that Nix
//! produced exactly the paths the lock names. The choices, and why:
//!
//! - Only flake entries are built. A catalog entry's recipe is Flox's catalog (a nixpkgs
//!   revision nixlet does not know how to re-evaluate as Flox did), and a store-path entry has
//!   no recipe at all; their paths come from caches or not at all.
//! - Caches first: a build runs only after nixlet's own fetch and every `nix-store --realise`
//!   failed, and only for flake packages whose outputs are still not valid.
//! - Opt-in per substituter: a build can take long, runs arbitrary builders as root, and may
//!   fetch the flake's sources from the network. The substituter's URL, keys, netrc file and
//!   `require_signatures` apply to whatever the build substitutes; `timeout_secs` to each build.
//! - One installable per output (`<attr-path>.<output>`): Nix 2.8 has no `^out,dev` syntax, and
//!   `<attr-path>` alone builds only the package's default outputs.
//! - What Nix built must be exactly what the lock names, output by output. A different path
//!   means the flake no longer builds what was locked (or the lock is wrong): that is an error
//!   naming the package, the output and both paths, and nothing Nix built is used.
//! - The flake cannot change the build's settings (`accept-flake-config = false`: its
//!   `nixConfig` could add substituters or keys) nor its own lock file
//!   (`--no-update-lock-file`: a flake whose inputs are not all locked is refused).
//! - Whatever the build made valid, right or wrong, is recorded in nixlet's install record as
//!   `nix build <installable>`, so that `nixlet gc` reclaims it once unused.

use std::collections::BTreeMap;
use std::ffi::OsString;

use nixlet_manifest::{FlakeInstallable, ResolvedEnv, StorePath};
use serde::Deserialize;

use crate::nix_cli_backend::{NixCliError, NixCliSubstituter, BUILD};

/// How one flake package of one environment is built: what `nix build` is given, and the store
/// paths it must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeRecipe {
    /// `owner/name:N`, for messages.
    pub environment: String,
    pub install_id: String,
    pub flake: FlakeInstallable,
    /// Output name → the store path the lock names; the outputs the environment realises.
    pub outputs: BTreeMap<String, StorePath>,
}

/// Why a flake package could not be built or its build not used.
#[derive(Debug, thiserror::Error)]
pub enum FlakeBuildProblem {
    #[error(
        "locked-url {url:?} has a fragment ('#'); the attribute path belongs in \
         locked-flake-attr-path"
    )]
    UrlWithFragment { url: String },
    #[error("{}", join_failures(.0))]
    Nix(Vec<(String, NixCliError)>),
    #[error("cannot read what `nix build --json` printed: {0}")]
    Json(String),
    #[error(
        "nix built {actual} for output {output:?}, but manifest.lock names {expected}: the \
         flake does not build what was locked, so nothing it built is used (re-lock the \
         environment, or fix the flake)"
    )]
    OutputMismatch {
        output: String,
        expected: StorePath,
        actual: StorePath,
    },
    #[error("nix build did not report output {output:?} (manifest.lock names {expected})")]
    OutputMissing { output: String, expected: StorePath },
}

impl FlakeBuildProblem {
    /// Whether what Nix built contradicts the lock: another substituter would build the same.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            FlakeBuildProblem::OutputMismatch { .. } | FlakeBuildProblem::OutputMissing { .. }
        )
    }
}

fn join_failures(failures: &[(String, NixCliError)]) -> String {
    failures
        .iter()
        .map(|(url, error)| format!("with substituter {url}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl FlakeRecipe {
    /// The flake packages of `env`, with the outputs it realises (what the fetch's roots hold).
    pub fn of_environment(env: &ResolvedEnv) -> Vec<FlakeRecipe> {
        env.packages
            .iter()
            .filter_map(|package| {
                Some(FlakeRecipe {
                    environment: env.display_name(),
                    install_id: package.install_id.clone(),
                    flake: package.flake.clone()?,
                    outputs: package
                        .outputs
                        .iter()
                        .map(|output| (output.name.clone(), output.store_path.clone()))
                        .collect(),
                })
            })
            .collect()
    }

    /// One installable per output, `<locked-url>#<attr-path>.<output>`. The fragment is
    /// percent-encoded (Nix decodes it), so that an attribute name with `#`, `?` or spaces
    /// stays one fragment.
    pub fn installables(&self) -> Result<Vec<String>, FlakeBuildProblem> {
        let url = &self.flake.locked_url;
        if url.contains('#') {
            return Err(FlakeBuildProblem::UrlWithFragment { url: url.clone() });
        }
        Ok(self
            .outputs
            .keys()
            .map(|output| {
                format!(
                    "{url}#{}",
                    encode_fragment(&format!("{}.{output}", self.flake.attr_path))
                )
            })
            .collect())
    }

    /// Every output Nix reported must be there, at the path the lock names.
    pub fn check_built(
        &self,
        built: &BTreeMap<String, StorePath>,
    ) -> Result<(), FlakeBuildProblem> {
        for (output, expected) in &self.outputs {
            match built.get(output) {
                None => {
                    return Err(FlakeBuildProblem::OutputMissing {
                        output: output.clone(),
                        expected: expected.clone(),
                    })
                }
                Some(actual) if actual != expected => {
                    return Err(FlakeBuildProblem::OutputMismatch {
                        output: output.clone(),
                        expected: expected.clone(),
                        actual: actual.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The arguments of `nix` that build `recipe` with `cli`'s cache and keys.
pub fn build_arguments(
    cli: &NixCliSubstituter,
    recipe: &FlakeRecipe,
    require_signatures: bool,
) -> Result<Vec<OsString>, FlakeBuildProblem> {
    let mut args: Vec<OsString> = [
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--no-link",
        "--json",
        "--no-update-lock-file",
        "--option",
        "accept-flake-config",
        "false",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.extend(cli.options(require_signatures));
    args.extend(recipe.installables()?.into_iter().map(OsString::from));
    Ok(args)
}

/// `nix build --json` prints `[{"drvPath": …, "outputs": {"<name>": "<path>"}}, …]`, one object
/// per installable in no promised order; with one installable per output, the union of the
/// `outputs` maps is output name → built path.
pub fn parse_built_outputs(
    stdout: &[u8],
) -> Result<BTreeMap<String, StorePath>, FlakeBuildProblem> {
    #[derive(Deserialize)]
    struct Built {
        outputs: BTreeMap<String, String>,
    }
    let built: Vec<Built> = serde_json::from_slice(stdout).map_err(|e| {
        FlakeBuildProblem::Json(format!("{e}: {}", String::from_utf8_lossy(stdout)))
    })?;
    let mut outputs = BTreeMap::new();
    for (name, path) in built.into_iter().flat_map(|b| b.outputs) {
        let path = StorePath::parse(&path)
            .map_err(|e| FlakeBuildProblem::Json(format!("output {name:?}: {e}")))?;
        if let Some(other) = outputs.insert(name.clone(), path.clone()) {
            if other != path {
                return Err(FlakeBuildProblem::Json(format!(
                    "output {name:?} reported twice, as {other} and {path}"
                )));
            }
        }
    }
    Ok(outputs)
}

/// Builds `recipe` with `cli`; returns what Nix built, output name → path, unchecked.
pub async fn build(
    cli: &NixCliSubstituter,
    recipe: &FlakeRecipe,
    require_signatures: bool,
) -> Result<BTreeMap<String, StorePath>, FlakeBuildProblem> {
    let args = build_arguments(cli, recipe, require_signatures)?;
    tracing::info!(
        environment = %recipe.environment,
        install_id = %recipe.install_id,
        flake = %recipe.flake,
        substituter = %cli.url,
        "no cache has this flake package; building it with nix build"
    );
    let stdout = cli
        .run(&cli.nix_program, args, BUILD)
        .await
        .map_err(|error| FlakeBuildProblem::Nix(vec![(cli.url.clone(), error)]))?;
    parse_built_outputs(&stdout)
}

/// Percent-encodes all but ASCII letters, digits and `._-`.
fn encode_fragment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"._-".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substituter::{SubstituterBackend, SubstituterConfig};

    const KEY: &str = "cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    const OUT: &str = "/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12";
    const DEV: &str = "/nix/store/1a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12-dev";
    const OTHER: &str = "/nix/store/2a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12";

    fn path(text: &str) -> StorePath {
        StorePath::parse(text).unwrap()
    }

    fn recipe(url: &str, attr_path: &str) -> FlakeRecipe {
        FlakeRecipe {
            environment: "acme/web:3".into(),
            install_id: "hello".into(),
            flake: FlakeInstallable {
                locked_url: url.into(),
                attr_path: attr_path.into(),
            },
            outputs: BTreeMap::from([("dev".into(), path(DEV)), ("out".into(), path(OUT))]),
        }
    }

    fn builder() -> NixCliSubstituter {
        NixCliSubstituter::new(&SubstituterConfig {
            url: "file:///srv/cache".into(),
            trusted_keys: vec![KEY.into()],
            backend: SubstituterBackend::NixCli,
            build_flakes: true,
            ..SubstituterConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn nix_build_gets_one_installable_per_output_and_only_this_cache() {
        let recipe = recipe(
            "path:/srv/flake?lastModified=1&narHash=sha256-AAAA%3D",
            "packages.x86_64-linux.hello",
        );
        let cli = builder();
        assert!(cli.build_flakes);
        let args: Vec<String> = build_arguments(&cli, &recipe, true)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--no-link",
                "--json",
                "--no-update-lock-file",
                "--option",
                "accept-flake-config",
                "false",
                "--option",
                "substituters",
                "file:///srv/cache",
                "--option",
                "trusted-public-keys",
                KEY,
                "--option",
                "require-sigs",
                "true",
                "--option",
                "narinfo-cache-negative-ttl",
                "0",
                "path:/srv/flake?lastModified=1&narHash=sha256-AAAA%3D#packages.x86_64-linux.hello.dev",
                "path:/srv/flake?lastModified=1&narHash=sha256-AAAA%3D#packages.x86_64-linux.hello.out",
            ]
        );
    }

    #[test]
    fn odd_attribute_names_are_encoded_and_a_url_with_a_fragment_is_refused() {
        let odd = recipe("github:a/b/0123", "packages.x86_64-linux.\"a b#c\"");
        assert_eq!(
            odd.installables().unwrap()[0],
            "github:a/b/0123#packages.x86_64-linux.%22a%20b%23c%22.dev"
        );
        let fragment = recipe("github:a/b/0123#x", "packages.x86_64-linux.hello");
        assert_eq!(
            fragment.installables().unwrap_err().to_string(),
            "locked-url \"github:a/b/0123#x\" has a fragment ('#'); the attribute path belongs \
             in locked-flake-attr-path"
        );
    }

    #[test]
    fn built_outputs_are_read_from_nix_json_in_any_order() {
        let json = format!(
            r#"[{{"drvPath":"/nix/store/wk5fgjqv1ay5xdg548xr2al1n5xchz2j-hello.drv","outputs":{{"out":"{OUT}"}}}},
                {{"drvPath":"/nix/store/wk5fgjqv1ay5xdg548xr2al1n5xchz2j-hello.drv","outputs":{{"dev":"{DEV}"}}}}]"#
        );
        let built = parse_built_outputs(json.as_bytes()).unwrap();
        assert_eq!(
            built,
            BTreeMap::from([("dev".into(), path(DEV)), ("out".into(), path(OUT))])
        );
        recipe("path:/f", "packages.x86_64-linux.hello")
            .check_built(&built)
            .unwrap();
        assert!(parse_built_outputs(b"error: oops")
            .unwrap_err()
            .to_string()
            .starts_with("cannot read what `nix build --json` printed: "));
        let twice =
            format!(r#"[{{"outputs":{{"out":"{OUT}"}}}},{{"outputs":{{"out":"{OTHER}"}}}}]"#);
        assert!(parse_built_outputs(twice.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("output \"out\" reported twice"));
    }

    #[test]
    fn an_output_other_than_the_locked_one_is_never_accepted() {
        let recipe = recipe("path:/f", "packages.x86_64-linux.hello");
        let wrong = BTreeMap::from([("dev".into(), path(DEV)), ("out".into(), path(OTHER))]);
        let error = recipe.check_built(&wrong).unwrap_err();
        assert!(error.is_mismatch());
        assert_eq!(
            error.to_string(),
            format!(
                "nix built {OTHER} for output \"out\", but manifest.lock names {OUT}: the flake \
                 does not build what was locked, so nothing it built is used (re-lock the \
                 environment, or fix the flake)"
            )
        );
        let partial = BTreeMap::from([("out".into(), path(OUT))]);
        assert_eq!(
            recipe.check_built(&partial).unwrap_err().to_string(),
            format!("nix build did not report output \"dev\" (manifest.lock names {DEV})")
        );
    }
}
