//! Which outputs of a locked package an environment installs, and which of them win file
//! collisions. The rules are those of Flox's environment builder (flox repo,
//! `buildenv/buildenv.nix` and `buildenv/builder.pl`, `getV1Outputs` and
//! `getSpecifiedOutputs`), and they depend on the manifest's schema:
//!
//! - `version = 1`: every output except `stubs` is installed; the entry's
//!   `outputs_to_install` win collisions at the package's priority, the other outputs lose
//!   them (the builder gives them priority `1000 * priority + n`). `stubs` holds link-time
//!   stand-ins for libraries such as CUDA's `libcuda.so` that would shadow the real driver.
//! - `schema-version` 1.10.0 and later: only the selected outputs are installed, all at the
//!   package's priority: the descriptor's `outputs` (`"all"`: every output, `stubs` included;
//!   a list: those), else the entry's `outputs_to_install` (a flake entry's
//!   `outputs-to-install`), else none.

use std::collections::BTreeSet;

use crate::install_descriptor::SelectedOutputs;
use crate::lock::entry::LockEntry;
use crate::schema_version::SchemaVersion;
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

/// The installed outputs of `entry`: those that win collisions first, in the order they were
/// asked for (each once), then the others by name.
pub(crate) fn choose_outputs(
    entry: &LockEntry,
    selected: Option<&SelectedOutputs>,
    schema: SchemaVersion,
) -> Result<Vec<ResolvedOutput>, UnknownOutput> {
    let to_install = entry.outputs_to_install.as_deref().unwrap_or_default();
    let mut outputs = Vec::with_capacity(entry.outputs.len());
    let mut placed = BTreeSet::new();
    if !schema.selects_outputs() {
        for name in to_install {
            if name != STUBS && placed.insert(name.as_str()) {
                outputs.push(output(entry, name, true));
            }
        }
        for name in entry.outputs.keys() {
            if name != STUBS && placed.insert(name.as_str()) {
                outputs.push(output(entry, name, false));
            }
        }
        return Ok(outputs);
    }
    let names: Vec<&String> = match selected {
        Some(SelectedOutputs::All) => entry.outputs.keys().collect(),
        Some(SelectedOutputs::Specific(names)) => {
            if let Some(missing) = names.iter().find(|name| !entry.outputs.contains_key(*name)) {
                return Err(UnknownOutput {
                    output: missing.clone(),
                    available: entry.outputs.keys().cloned().collect(),
                });
            }
            names.iter().collect()
        }
        None => to_install.iter().collect(),
    };
    for name in names {
        if placed.insert(name.as_str()) {
            outputs.push(output(entry, name, true));
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lock::entry::LockEntryKind;

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
            priority: None,
            flake: None,
            pname: None,
            version: None,
        }
    }

    /// (name, to_install) in order.
    fn chosen(
        entry: &LockEntry,
        selected: Option<&SelectedOutputs>,
        schema: SchemaVersion,
    ) -> Vec<(String, bool)> {
        choose_outputs(entry, selected, schema)
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

    const V1: SchemaVersion = SchemaVersion::V1;
    const LATEST: SchemaVersion = SchemaVersion::V1_15_0;

    #[test]
    fn version_1_installs_everything_but_stubs_and_outputs_to_install_win() {
        let cudart = entry(&["dev", "lib", "out", "static", "stubs"], Some(&["out"]));
        assert_eq!(
            chosen(&cudart, None, V1),
            pairs(&[
                ("out", true),
                ("dev", false),
                ("lib", false),
                ("static", false)
            ])
        );
        // Without outputs_to_install every output is installed and none wins.
        assert_eq!(
            chosen(&entry(&["bin", "out"], None), None, V1),
            pairs(&[("bin", false), ("out", false)])
        );
        // Listed twice (the catalog does that), placed once; stubs even listed stays out.
        assert_eq!(
            chosen(
                &entry(&["out", "stubs", "man"], Some(&["out", "stubs", "out"])),
                None,
                V1
            ),
            pairs(&[("out", true), ("man", false)])
        );
    }

    #[test]
    fn schema_versions_install_outputs_to_install_only() {
        let curl = entry(
            &["bin", "dev", "devdoc", "man", "out"],
            Some(&["bin", "man", "bin"]),
        );
        assert_eq!(
            chosen(&curl, None, LATEST),
            pairs(&[("bin", true), ("man", true)])
        );
        assert_eq!(chosen(&entry(&["out"], None), None, LATEST), pairs(&[]));
    }

    #[test]
    fn all_installs_every_output_stubs_included() {
        let cudart = entry(&["dev", "out", "stubs"], Some(&["out"]));
        assert_eq!(
            chosen(&cudart, Some(&SelectedOutputs::All), LATEST),
            pairs(&[("dev", true), ("out", true), ("stubs", true)])
        );
    }

    #[test]
    fn a_list_installs_exactly_those_outputs() {
        let cudart = entry(&["dev", "out", "stubs"], Some(&["out"]));
        let selected = SelectedOutputs::Specific(vec!["stubs".into(), "dev".into()]);
        assert_eq!(
            chosen(&cudart, Some(&selected), LATEST),
            pairs(&[("stubs", true), ("dev", true)])
        );
        let missing = SelectedOutputs::Specific(vec!["man".into()]);
        assert_eq!(
            choose_outputs(&cudart, Some(&missing), LATEST).unwrap_err(),
            UnknownOutput {
                output: "man".into(),
                available: vec!["dev".into(), "out".into(), "stubs".into()],
            }
        );
    }
}
