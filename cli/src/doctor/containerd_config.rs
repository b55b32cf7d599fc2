//! Does containerd's config, as containerd reads it, declare the `nixlet` runtime with the
//! annotation pass-through the shim depends on? Files are parsed with the installer's readers
//! (schemas, `imports`) and nothing is written.
//!
//! Which table counts follows containerd's merge of `imports` (see the installer's
//! `containerd_plan`), decided by the running release when doctor knows it, else guessed from
//! the schema: containerd 1.x (schema 2) uses the CRI plugin table of the last file in load
//! order that sets it, whole; 2.x merges key by key, later files winning.

use std::path::{Path, PathBuf};

use nixlet_installer::containerd_imports::{self, RelativeGlobs};
use nixlet_installer::containerd_schema::{self, Detected, Schema};
use nixlet_installer::names::{
    ANNOTATION_PATTERNS, RUNC_RUNTIME_TYPE, RUNTIME_NAME, RUNTIME_TYPE, SHIM_BINARY,
};
use nixlet_installer::{managed_file, ContainerdVersion, HostRoot};
use toml_edit::{DocumentMut, Item};

use super::report::Report;

const CHECK: &str = "containerd config";
const INSTALL_FIX: &str = "run `nixlet node install --host-root /`, which adds the runtime with \
                           pod_annotations and container_annotations [\"nixlet.dev/*\", \
                           \"flox.dev/*\"], then restart containerd";
/// Annotation keys the shim reads, for checking that a pattern lets them through.
const ENVIRONMENT_KEY: &str = "nixlet.dev/environment";
const ALIAS_KEY: &str = "flox.dev/environment";

/// One key of the runtime table and the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting<T> {
    value: T,
    file: PathBuf,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct RuntimeSettings {
    runtime_type: Option<Setting<String>>,
    runtime_path: Option<Setting<String>>,
    pod_annotations: Option<Setting<Vec<String>>>,
    container_annotations: Option<Setting<Vec<String>>>,
}

pub fn check(
    report: &mut Report,
    host: &HostRoot,
    main: &Path,
    version: Option<&ContainerdVersion>,
) {
    match effective_runtime(host, main, version) {
        Ok(Lookup::Found(settings)) => judge(report, main, &settings, version),
        Ok(Lookup::Missing { shadowed_in }) => {
            let message = match shadowed_in {
                Some((declared, effective)) => format!(
                    "the `{RUNTIME_NAME}` runtime is declared in {} but {} also sets the CRI \
                     plugin table, and containerd 1.x uses only that file's table",
                    declared.display(),
                    effective.display()
                ),
                None => format!(
                    "{} (and its imports) declare no `{RUNTIME_NAME}` runtime",
                    main.display()
                ),
            };
            report.fail(CHECK, message, INSTALL_FIX);
        }
        Ok(Lookup::NoFile) => report.fail(
            CHECK,
            format!(
                "no containerd config at {}: containerd runs on its built-in defaults, which have \
                 no `{RUNTIME_NAME}` runtime",
                main.display()
            ),
            INSTALL_FIX,
        ),
        Err(message) => report.fail(
            CHECK,
            message,
            "correct the file (`containerd config dump` shows what containerd makes of it), \
             then run `nixlet node install --host-root /`",
        ),
    }
}

fn judge(
    report: &mut Report,
    main: &Path,
    settings: &RuntimeSettings,
    version: Option<&ContainerdVersion>,
) {
    let mut problems = Vec::new();
    let runc_path = settings
        .runtime_path
        .as_ref()
        .filter(|path| Path::new(&path.value).file_name() == Some(SHIM_BINARY.as_ref()));
    let mut declared_as = RUNTIME_TYPE.to_string();
    match (&settings.runtime_type, runc_path) {
        (Some(Setting { value, .. }), _) if value == RUNTIME_TYPE => {}
        // README, "containerd 2.0-2.3": nixlet's shim declared as a runc-type runtime.
        (Some(Setting { value, .. }), Some(path)) if value == RUNC_RUNTIME_TYPE => {
            declared_as = format!("{RUNC_RUNTIME_TYPE} at {}", path.value);
            if version.is_some_and(|v| (v.major, v.minor) < (1, 7)) {
                problems.push(format!(
                    "runtime_type {RUNC_RUNTIME_TYPE:?} with runtime_path {:?}: containerd {} \
                     starts a pod's containers with the runc shim itself, not through \
                     runtime_path, so they get no environment (this form needs 1.7 or later)",
                    path.value,
                    version.map_or("", |v| v.text.as_str())
                ));
            }
        }
        (Some(Setting { value, file }), _) => problems.push(format!(
            "runtime_type is {value:?} (in {}), not {RUNTIME_TYPE:?} (or {RUNC_RUNTIME_TYPE:?} \
             with runtime_path naming {SHIM_BINARY})",
            file.display()
        )),
        (None, _) => problems.push(format!("it has no runtime_type (want {RUNTIME_TYPE:?})")),
    }
    let mut missing_alias = Vec::new();
    for (key, setting) in [
        ("pod_annotations", &settings.pod_annotations),
        ("container_annotations", &settings.container_annotations),
    ] {
        let patterns = setting.as_ref().map(|s| s.value.as_slice()).unwrap_or(&[]);
        if !passes(patterns, ENVIRONMENT_KEY) {
            problems.push(format!(
                "{key} {patterns:?} does not pass {ENVIRONMENT_KEY} (containerd drops the \
                 annotation before the shim sees it)"
            ));
        } else if !passes(patterns, ALIAS_KEY) {
            missing_alias.push(key);
        }
    }
    let file = settings
        .runtime_type
        .as_ref()
        .map(|s| s.file.clone())
        .unwrap_or_else(|| main.to_path_buf());
    if problems.is_empty() {
        report.ok(
            CHECK,
            format!(
                "runtime `{RUNTIME_NAME}` in {}: {declared_as}, pod and container annotations \
                 nixlet.dev/* pass through",
                file.display()
            ),
        );
    } else {
        report.fail(
            CHECK,
            format!(
                "runtime `{RUNTIME_NAME}` in {}: {}",
                file.display(),
                problems.join("; ")
            ),
            INSTALL_FIX,
        );
    }
    if let Some(version) = version.filter(|v| v.asks_features_only_of_runc_type()) {
        if declared_as == RUNTIME_TYPE {
            report.warn(
                CHECK,
                format!(
                    "containerd {} reports a runtime's features (recursive read-only mounts, \
                     user namespaces) to the kubelet only for {RUNC_RUNTIME_TYPE:?} runtimes: \
                     pods of the `{RUNTIME_NAME}` RuntimeClass that ask for recursiveReadOnly \
                     mounts are refused",
                    version.text
                ),
                format!(
                    "run `nixlet node install --host-root /`: on containerd 2.0 to 2.3 it \
                     declares {SHIM_BINARY} as a runtime of type {RUNC_RUNTIME_TYPE:?} at its \
                     runtime_path (README, \"containerd 2.0 to 2.3\"); or run containerd 2.4 \
                     or later"
                ),
            );
        }
    }
    if !missing_alias.is_empty() {
        report.warn(
            CHECK,
            format!(
                "{} of runtime `{RUNTIME_NAME}` do not pass flox.dev/*: pods using the \
                 flox.dev/environment alias get no environment",
                missing_alias.join(" and ")
            ),
            format!("add {:?} to both lists", ANNOTATION_PATTERNS[1]),
        );
    }
}

/// Whether containerd lets annotation `key` through one of `patterns` (Go's `path.Match`:
/// `*` does not cross `/`).
fn passes(patterns: &[String], key: &str) -> bool {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    patterns
        .iter()
        .any(|pattern| glob::Pattern::new(pattern).is_ok_and(|p| p.matches_with(key, options)))
}

#[derive(Debug)]
enum Lookup {
    Found(RuntimeSettings),
    Missing {
        /// Schema 2: (file declaring the runtime, file whose CRI table containerd uses).
        shadowed_in: Option<(PathBuf, PathBuf)>,
    },
    NoFile,
}

fn effective_runtime(
    host: &HostRoot,
    main: &Path,
    version: Option<&ContainerdVersion>,
) -> Result<Lookup, String> {
    let Some(text) =
        managed_file::read_text_optional(&host.local(main)).map_err(|e| e.to_string())?
    else {
        return Ok(Lookup::NoFile);
    };
    let main_doc = containerd_schema::parse(&text, main).map_err(|e| e.to_string())?;
    let schema = match containerd_schema::detect(&main_doc, main).map_err(|e| e.to_string())? {
        Detected::Blank => return Ok(Lookup::Missing { shadowed_in: None }),
        Detected::Schema(schema) => schema,
    };
    // A release that cannot read the file is not the one it is meant for (the version check
    // reports that); judge the file by its schema then.
    let (globs, merges) = match version.filter(|version| version.reads(schema)) {
        Some(version) => (RelativeGlobs::of(version), version.merges_plugin_tables()),
        // Without the release, a schema 2 file is taken to be read by containerd 1.6.
        None if schema == Schema::V2 => (RelativeGlobs::FromWorkingDirectory, false),
        None => (RelativeGlobs::FromImportingFile, true),
    };
    let files =
        containerd_imports::load_order(host, main, main_doc, globs).map_err(|e| e.to_string())?;

    let table_path = schema.runtime_table_path();
    let runtime_in = |doc: &DocumentMut| -> Option<Item> {
        let mut item = doc.as_item();
        for key in table_path {
            item = item.get(key)?;
        }
        Some(item.clone())
    };
    if !merges {
        let plugin = schema.cri_runtime_plugin();
        let effective = files
            .iter()
            .rev()
            .find(|(_, doc)| containerd_schema::defines_plugin(doc, plugin))
            .unwrap_or(&files[0]);
        return Ok(match runtime_in(&effective.1) {
            Some(table) => Lookup::Found(settings_of(
                &table,
                &effective.0,
                RuntimeSettings::default(),
            )),
            None => Lookup::Missing {
                shadowed_in: files
                    .iter()
                    .find(|(_, doc)| runtime_in(doc).is_some())
                    .map(|(path, _)| (path.clone(), effective.0.clone())),
            },
        });
    }
    let mut settings = RuntimeSettings::default();
    let mut any = false;
    for (path, doc) in &files {
        if let Some(table) = runtime_in(doc) {
            any = true;
            settings = settings_of(&table, path, settings);
        }
    }
    Ok(if any {
        Lookup::Found(settings)
    } else {
        Lookup::Missing { shadowed_in: None }
    })
}

/// `earlier` with the keys `table` sets replaced.
fn settings_of(table: &Item, file: &Path, earlier: RuntimeSettings) -> RuntimeSettings {
    let string = |key: &str| {
        table.get(key).and_then(Item::as_str).map(|value| Setting {
            value: value.to_string(),
            file: file.to_path_buf(),
        })
    };
    let list = |key: &str| {
        table
            .get(key)
            .and_then(Item::as_array)
            .map(|array| Setting {
                value: array
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                file: file.to_path_buf(),
            })
    };
    RuntimeSettings {
        runtime_type: string("runtime_type").or(earlier.runtime_type),
        runtime_path: string("runtime_path").or(earlier.runtime_path),
        pod_annotations: list("pod_annotations").or(earlier.pod_annotations),
        container_annotations: list("container_annotations").or(earlier.container_annotations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_containerd_matches_them() {
        let p = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(passes(&p(&["nixlet.dev/*"]), ENVIRONMENT_KEY));
        assert!(passes(&p(&["other", "nixlet.dev/env*"]), ENVIRONMENT_KEY));
        // `*` does not cross `/` in Go's path.Match.
        assert!(!passes(&p(&["*"]), ENVIRONMENT_KEY));
        assert!(!passes(&p(&["flox.dev/*"]), ENVIRONMENT_KEY));
        assert!(!passes(&[], ENVIRONMENT_KEY));
    }
}
