//! Which containerd config files to write, and with what, to add the `nixlet` runtime.
//!
//! The running containerd's release decides, not a guess from the file: which schemas it reads
//! (a file it cannot read is refused), the schema of a file nixlet creates, and how it merges
//! `imports` (checked with `containerd config dump`):
//!
//! - containerd 1.x replaces a plugin's whole table with the table of each later file that sets
//!   it. A drop-in that sets only `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nixlet`
//!   would silently reset every other CRI setting (sandbox image, cgroup driver, other runtimes
//!   such as nvidia, CNI paths) to defaults. So a schema 2 file is edited in place, in the last
//!   file of the load order that sets the CRI plugin (the table containerd actually uses), or
//!   the main file when none does. containerd 2.x reads schema 2 too (migrating it at every
//!   start), and the same in-place edit is right there.
//! - containerd 2.x merges imported plugin tables key by key, so a schema 3 or 4 file gets a
//!   drop-in: `/etc/containerd/conf.d/nixlet.toml`, of the main file's schema, plus
//!   `conf.d/nixlet.toml` in the main file's `imports` when no entry there covers it yet. The
//!   entry is relative (containerd takes it from the main file's directory), so the config means
//!   the same wherever the node's tree is mounted.
//! - No config, or one with only comments: the runtime in the schema containerd wants for a new
//!   file (2 on 1.x, 3 on 2.x); containerd's defaults apply to everything else, as before.

use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::containerd_edit::{self, ConfigEdit};
use crate::containerd_error::ConfigError;
use crate::containerd_imports::{self, RelativeGlobs};
use crate::containerd_schema::{self, Detected, Schema};
use crate::containerd_version::ContainerdVersion;
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::install_state::FileRole;
use crate::managed_file;
use crate::names::{CONTAINERD_CONFIG, CONTAINERD_DROP_IN};
use crate::runtime_form::RuntimeForm;

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWrite {
    /// Host path.
    pub path: PathBuf,
    pub text: String,
    pub role: FileRole,
    pub edit: ConfigEdit,
    /// What the write does, for the report.
    pub summary: String,
}

const CREATED_FILE_HEADER: &str = "\
# containerd config written by `nixlet node install`: this node had none, so everything not set
# here keeps containerd's defaults. `nixlet node uninstall` removes this file.
";

const DROP_IN_HEADER: &str = "\
# Written by `nixlet node install`, removed by `nixlet node uninstall`. containerd 2.x merges
# this table key by key into the main config's CRI runtime plugin.
";

/// The writes that make containerd's config declare the nixlet runtime in `form` for the
/// running containerd `version`; empty when it already does.
pub fn plan(
    host: &HostRoot,
    version: &ContainerdVersion,
    form: &RuntimeForm,
) -> Result<Vec<PlannedWrite>, InstallError> {
    let main = Path::new(CONTAINERD_CONFIG);
    let new_schema = version.new_file_schema();
    let replaces_list = version.replaces_runtime_list();
    let Some(text) = managed_file::read_text_optional(&host.local(main))? else {
        let mut doc = containerd_schema::parse(CREATED_FILE_HEADER, main)?;
        containerd_edit::add_version(&mut doc, new_schema);
        let runtime =
            containerd_edit::ensure_runtime(&mut doc, new_schema, form, replaces_list, main)?;
        return Ok(vec![PlannedWrite {
            path: main.to_path_buf(),
            text: doc.to_string(),
            role: FileRole::ContainerdConfig,
            edit: ConfigEdit {
                created_file: true,
                runtime,
                ..ConfigEdit::default()
            },
            summary: format!(
                "created with the nixlet runtime (schema {}, as containerd {} reads it; \
                 containerd's defaults for everything else)",
                new_schema.version(),
                version.line()
            ),
        }]);
    };
    let mut doc = containerd_schema::parse(&text, main)?;
    match containerd_schema::detect(&doc, main)? {
        Detected::Blank => {
            containerd_edit::add_version(&mut doc, new_schema);
            let runtime =
                containerd_edit::ensure_runtime(&mut doc, new_schema, form, replaces_list, main)?;
            Ok(vec![PlannedWrite {
                path: main.to_path_buf(),
                text: doc.to_string(),
                role: FileRole::ContainerdConfig,
                edit: ConfigEdit {
                    added_version: true,
                    runtime,
                    ..ConfigEdit::default()
                },
                summary: format!(
                    "had no settings: added `version = {}` (as containerd {} reads it) and the \
                     nixlet runtime",
                    new_schema.version(),
                    version.line()
                ),
            }])
        }
        Detected::Schema(schema) if !version.reads(schema) => Err(ConfigError::SchemaTooNew {
            path: main.to_path_buf(),
            declared: schema.version(),
            running: version.text.clone(),
            newest: version.newest_schema().version(),
            first_reader: schema.first_reader(),
        }
        .into()),
        Detected::Schema(Schema::V2) => plan_schema_2(host, main, doc, version, form),
        Detected::Schema(schema) => plan_drop_in(host, main, doc, schema, version, form),
    }
}

fn plan_schema_2(
    host: &HostRoot,
    main: &Path,
    main_doc: DocumentMut,
    version: &ContainerdVersion,
    form: &RuntimeForm,
) -> Result<Vec<PlannedWrite>, InstallError> {
    let plugin = Schema::V2.cri_runtime_plugin();
    let files = containerd_imports::load_order(host, main, main_doc, RelativeGlobs::of(version))?;
    let (target, mut doc) = files
        .iter()
        .rev()
        .find(|(_, doc)| containerd_schema::defines_plugin(doc, plugin))
        .unwrap_or(&files[0])
        .clone();
    let Some(runtime) = containerd_edit::ensure_runtime(
        &mut doc,
        Schema::V2,
        form,
        version.replaces_runtime_list(),
        &target,
    )?
    else {
        return Ok(Vec::new());
    };
    let mut summary =
        "added the nixlet runtime to the CRI plugin (schema 2, edited in place)".to_string();
    if target != main {
        summary.push_str(&format!(
            ": this imported file sets the CRI plugin table that containerd uses (containerd \
             1.x replaces the table of {} with it)",
            main.display()
        ));
    }
    if !version.reads_natively(Schema::V2) {
        summary.push_str(&format!(
            "; containerd {} migrates schema 2 at every start (`containerd config migrate` \
             rewrites the file as schema {})",
            version.line(),
            version.newest_schema().version()
        ));
    }
    Ok(vec![PlannedWrite {
        path: target,
        text: doc.to_string(),
        role: FileRole::ContainerdConfig,
        edit: ConfigEdit {
            runtime: Some(runtime),
            ..ConfigEdit::default()
        },
        summary,
    }])
}

fn plan_drop_in(
    host: &HostRoot,
    main: &Path,
    mut main_doc: DocumentMut,
    schema: Schema,
    version: &ContainerdVersion,
    form: &RuntimeForm,
) -> Result<Vec<PlannedWrite>, InstallError> {
    // A main file that declares the runtime itself (one nixlet created on a node without a
    // config, or written by hand) needs no drop-in.
    if containerd_edit::ensure_runtime(&mut main_doc.clone(), schema, form, false, main)?.is_none()
    {
        return Ok(Vec::new());
    }
    let drop_in = Path::new(CONTAINERD_DROP_IN);
    let mut writes = Vec::new();
    let wanted = drop_in_text(schema, form)?;
    let current = managed_file::read_text_optional(&host.local(drop_in))?;
    if current.as_deref() != Some(wanted.as_str()) {
        writes.push(PlannedWrite {
            path: drop_in.to_path_buf(),
            text: wanted,
            role: FileRole::ContainerdDropIn,
            edit: ConfigEdit::default(),
            summary: format!(
                "drop-in with the nixlet runtime (schema {}, as {} declares)",
                schema.version(),
                main.display()
            ),
        });
    }
    let globs = RelativeGlobs::of(version);
    let mut covered = false;
    for entry in containerd_imports::entries(&main_doc, main)? {
        covered |= containerd_imports::covers(&entry, main, globs, drop_in)?;
    }
    if !covered {
        let entry = import_entry(main, drop_in);
        if let Some(import) = containerd_edit::ensure_import(&mut main_doc, &entry, main)? {
            writes.push(PlannedWrite {
                path: main.to_path_buf(),
                text: main_doc.to_string(),
                role: FileRole::ContainerdConfig,
                edit: ConfigEdit {
                    import: Some(import),
                    ..ConfigEdit::default()
                },
                summary: format!("added {entry} to `imports`"),
            });
        }
    }
    Ok(writes)
}

/// The `imports` entry for `drop_in`: relative to the main file's directory when below it.
fn import_entry(main: &Path, drop_in: &Path) -> String {
    main.parent()
        .and_then(|dir| drop_in.strip_prefix(dir).ok())
        .unwrap_or(drop_in)
        .to_string_lossy()
        .into_owned()
}

/// The drop-in's exact text for a main file of `schema` (3 or 4).
pub fn drop_in_text(schema: Schema, form: &RuntimeForm) -> Result<String, InstallError> {
    let path = Path::new(CONTAINERD_DROP_IN);
    let mut doc = containerd_schema::parse(DROP_IN_HEADER, path)?;
    containerd_edit::add_version(&mut doc, schema);
    containerd_edit::ensure_runtime(&mut doc, schema, form, false, path)?;
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_entry_is_relative_to_the_main_file() {
        assert_eq!(
            import_entry(Path::new(CONTAINERD_CONFIG), Path::new(CONTAINERD_DROP_IN)),
            "conf.d/nixlet.toml"
        );
        assert_eq!(
            import_entry(
                Path::new("/etc/k3s/config.toml"),
                Path::new(CONTAINERD_DROP_IN)
            ),
            CONTAINERD_DROP_IN
        );
    }

    #[test]
    fn a_schema_the_running_containerd_cannot_read_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let config = host.local(Path::new(CONTAINERD_CONFIG));
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "version = 3\n").unwrap();
        let version = |text| ContainerdVersion::parse(text).unwrap();
        let form = RuntimeForm::NixletType;
        let error = plan(&host, &version("1.7.24"), &form)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "containerd config /etc/containerd/config.toml declares `version = 3`, which the \
             running containerd 1.7.24 cannot read (it reads up to version 2; version 3 needs \
             containerd 2.0 or later): containerd would not start with it, so nixlet changes \
             nothing; write the file for schema 2 (or upgrade containerd) and run the installer \
             again"
        );
        std::fs::write(&config, "version = 4\n").unwrap();
        let error = plan(&host, &version("2.1.9"), &form)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("running containerd 2.1.9 cannot read (it reads up to version 3; version 4 needs containerd 2.3 or later)"),
            "{error}"
        );
        assert_eq!(plan(&host, &version("2.4.0"), &form).unwrap().len(), 2);
    }
}
