//! Which outputs of a locked package are realised, and which of them win file collisions.
//!
//! Flox's rule for `version = 1` manifests: every output except `stubs` goes into the
//! environment; the outputs to install win collisions at the package's priority, the others
//! lose them (to every output to install of any priority). `stubs` is left out because it
//! holds link-time stand-ins for libraries such as CUDA's `libcuda.so` that would shadow the
//! real driver at run time; naming it in the descriptor's `outputs` list brings it in.
//!
//! The outputs to install are, first found: the descriptor's `outputs` (`"all"` means every
//! realised output), a flake entry's `requested-outputs-to-install`, the entry's
//! `outputs_to_install`, and else Nix's own default for `meta.outputsToInstall`: `bin` if the
//! package has it, else `out`, else its first output, plus `man` if it has it.

use std::collections::BTreeSet;

use crate::install_descriptor::SelectedOutputs;
use crate::lock_entry::LockEntry;
use crate::store_path::StorePath;

const STUBS: &str = "stubs";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedOutput {
    /// e.g. `out`, `bin`, `man`.
    pub name: String,
    pub store_path: StorePath,
    /// Wins file collisions at the package's priority; `false` loses them.
    pub to_install: bool,
}

/// An output the descriptor asks for that the lock entry does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownOutput {
    pub output: String,
    /// The entry's output names, sorted.
    pub available: Vec<String>,
}

/// The realised outputs of `entry`: those to install first, in the order they were asked
/// for, then the others by name.
pub(crate) fn choose_outputs(
    entry: &LockEntry,
    selected: Option<&SelectedOutputs>,
) -> Result<Vec<ResolvedOutput>, UnknownOutput> {
    let mut realised: BTreeSet<&str> = entry
        .outputs
        .keys()
        .map(String::as_str)
        .filter(|name| *name != STUBS)
        .collect();

    let to_install: Vec<&str> = match selected {
        Some(SelectedOutputs::All) => realised.iter().copied().collect(),
        Some(SelectedOutputs::Specific(names)) => {
            if let Some(missing) = names.iter().find(|name| !entry.outputs.contains_key(*name)) {
                return Err(UnknownOutput {
                    output: missing.clone(),
                    available: entry.outputs.keys().cloned().collect(),
                });
            }
            // Asked for by name, so realised even if it is `stubs`.
            realised.extend(names.iter().map(String::as_str));
            names.iter().map(String::as_str).collect()
        }
        None => match entry
            .requested_outputs
            .as_ref()
            .or(entry.outputs_to_install.as_ref())
        {
            Some(names) => names
                .iter()
                .map(String::as_str)
                .filter(|name| realised.contains(name))
                .collect(),
            None => nix_default_outputs_to_install(&realised),
        },
    };

    let mut outputs = Vec::with_capacity(realised.len());
    let mut placed = BTreeSet::new();
    for name in &to_install {
        if placed.insert(*name) {
            outputs.push(output(entry, name, true));
        }
    }
    for name in &realised {
        if placed.insert(*name) {
            outputs.push(output(entry, name, false));
        }
    }
    Ok(outputs)
}

fn output(entry: &LockEntry, name: &str, to_install: bool) -> ResolvedOutput {
    ResolvedOutput {
        name: name.to_string(),
        store_path: entry.outputs[name].clone(),
        to_install,
    }
}

/// nixpkgs' default `meta.outputsToInstall`.
fn nix_default_outputs_to_install<'a>(realised: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let main = ["bin", "out"]
        .into_iter()
        .find_map(|name| realised.get(name).copied())
        .or_else(|| realised.first().copied());
    main.into_iter()
        .chain(realised.get("man").copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lock_entry::LockEntryKind;

    fn path(name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", "1".repeat(32))).unwrap()
    }

    fn entry(outputs: &[&str], to_install: Option<&[&str]>) -> LockEntry {
        LockEntry {
            install_id: "pkg".into(),
            system: "x86_64-linux".into(),
            kind: LockEntryKind::Catalog,
            outputs: outputs
                .iter()
                .map(|name| (name.to_string(), path(name)))
                .collect::<BTreeMap<_, _>>(),
            outputs_to_install: to_install
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
            requested_outputs: None,
            flake: None,
            pname: None,
            version: None,
        }
    }

    /// (name, to_install) in order.
    fn chosen(entry: &LockEntry, selected: Option<&SelectedOutputs>) -> Vec<(String, bool)> {
        choose_outputs(entry, selected)
            .unwrap()
            .into_iter()
            .map(|output| {
                assert_eq!(output.store_path, path(&output.name));
                (output.name, output.to_install)
            })
            .collect()
    }

    fn pairs(items: &[(&str, bool)]) -> Vec<(String, bool)> {
        items.iter().map(|(n, b)| (n.to_string(), *b)).collect()
    }

    #[test]
    fn everything_but_stubs_is_realised_and_outputs_to_install_come_first() {
        let cudart = entry(&["dev", "lib", "out", "static", "stubs"], Some(&["out"]));
        assert_eq!(
            chosen(&cudart, None),
            pairs(&[
                ("out", true),
                ("dev", false),
                ("lib", false),
                ("static", false)
            ])
        );
        let curl = entry(
            &["bin", "dev", "devdoc", "man", "out"],
            Some(&["bin", "man"]),
        );
        assert_eq!(
            chosen(&curl, None),
            pairs(&[
                ("bin", true),
                ("man", true),
                ("dev", false),
                ("devdoc", false),
                ("out", false)
            ])
        );
    }

    #[test]
    fn all_makes_every_realised_output_win() {
        let cudart = entry(&["dev", "out", "stubs"], Some(&["out"]));
        assert_eq!(
            chosen(&cudart, Some(&SelectedOutputs::All)),
            pairs(&[("dev", true), ("out", true)])
        );
    }

    #[test]
    fn a_list_chooses_the_winners_and_can_bring_in_stubs() {
        let cudart = entry(&["dev", "out", "stubs"], Some(&["out"]));
        let selected = SelectedOutputs::Specific(vec!["stubs".into(), "dev".into()]);
        assert_eq!(
            chosen(&cudart, Some(&selected)),
            pairs(&[("stubs", true), ("dev", true), ("out", false)])
        );
        let missing = SelectedOutputs::Specific(vec!["man".into()]);
        assert_eq!(
            choose_outputs(&cudart, Some(&missing)).unwrap_err(),
            UnknownOutput {
                output: "man".into(),
                available: vec!["dev".into(), "out".into(), "stubs".into()],
            }
        );
    }

    #[test]
    fn requested_outputs_of_a_flake_win_over_the_package_default() {
        let mut jq = entry(&["bin", "man", "out"], Some(&["bin", "man"]));
        jq.requested_outputs = Some(vec!["out".into()]);
        assert_eq!(
            chosen(&jq, None),
            pairs(&[("out", true), ("bin", false), ("man", false)])
        );
    }

    #[test]
    fn stubs_in_outputs_to_install_are_still_left_out() {
        let odd = entry(&["out", "stubs"], Some(&["stubs", "out"]));
        assert_eq!(chosen(&odd, None), pairs(&[("out", true)]));
    }

    #[test]
    fn without_outputs_to_install_nix_defaults_apply() {
        assert_eq!(
            chosen(&entry(&["bin", "dev", "man", "out"], None), None),
            pairs(&[("bin", true), ("man", true), ("dev", false), ("out", false)])
        );
        assert_eq!(
            chosen(&entry(&["dev", "out"], None), None),
            pairs(&[("out", true), ("dev", false)])
        );
        assert_eq!(
            chosen(&entry(&["lib", "dev"], None), None),
            pairs(&[("dev", true), ("lib", false)])
        );
        assert_eq!(chosen(&entry(&["stubs"], None), None), pairs(&[]));
    }
}
