//! Which containerd config files to write, and with what, to add the `nixlet` runtime.
//!
//! How containerd merges `imports` decides the strategy (checked with `containerd config dump`):
//!
//! - containerd 1.6 and 1.7 (schema 2) replace a plugin's whole table with the table of each
//!   later file that sets it. A drop-in that sets only
//!   `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nixlet` would silently reset every
//!   other CRI setting (sandbox image, cgroup driver, other runtimes such as nvidia, CNI paths) to
//!   defaults. So schema 2 is edited in place, in the last file of the load order that sets the
//!   CRI plugin (the table containerd actually uses), or the main file when none does. A drop-in
//!   would be safe only while no other file configured CRI, which nixlet cannot keep true.
//! - containerd 2.x (schema 3) merges imported plugin tables key by key, so a drop-in is safe:
//!   `/etc/containerd/conf.d/nixlet.toml`, plus its path in the main file's `imports` when no
//!   entry there covers it yet.
//! - No config at all: a minimal schema 2 file (which containerd 1.x and 2.x both read) with only
//!   the runtime; containerd's defaults apply to everything else, as they did before.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::containerd_edit::{self, ConfigEdit};
use crate::containerd_imports;
use crate::containerd_schema::{self, Detected, Schema};
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::install_state::FileRole;
use crate::managed_file;
use crate::names::{CONTAINERD_CONFIG, CONTAINERD_DROP_IN};

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

/// The writes that make containerd's config declare the nixlet runtime; empty when it already
/// does.
pub fn plan(host: &HostRoot) -> Result<Vec<PlannedWrite>, InstallError> {
    let main = Path::new(CONTAINERD_CONFIG);
    let Some(text) = managed_file::read_text_optional(&host.local(main))? else {
        let mut doc = containerd_schema::parse(CREATED_FILE_HEADER, main)?;
        containerd_edit::add_version(&mut doc, Schema::V2);
        let runtime = containerd_edit::ensure_runtime(&mut doc, Schema::V2, main)?;
        return Ok(vec![PlannedWrite {
            path: main.to_path_buf(),
            text: doc.to_string(),
            role: FileRole::ContainerdConfig,
            edit: ConfigEdit {
                created_file: true,
                runtime,
                ..ConfigEdit::default()
            },
            summary: "created with the nixlet runtime (schema 2; containerd's defaults for \
                      everything else)"
                .into(),
        }]);
    };
    let mut doc = containerd_schema::parse(&text, main)?;
    match containerd_schema::detect(&doc, main)? {
        Detected::Blank => {
            containerd_edit::add_version(&mut doc, Schema::V2);
            let runtime = containerd_edit::ensure_runtime(&mut doc, Schema::V2, main)?;
            Ok(vec![PlannedWrite {
                path: main.to_path_buf(),
                text: doc.to_string(),
                role: FileRole::ContainerdConfig,
                edit: ConfigEdit {
                    added_version: true,
                    runtime,
                    ..ConfigEdit::default()
                },
                summary: "had no settings: added `version = 2` and the nixlet runtime".into(),
            }])
        }
        Detected::Schema(Schema::V2) => plan_schema_2(host, main, doc),
        Detected::Schema(Schema::V3) => plan_schema_3(host, main, doc),
    }
}

fn plan_schema_2(
    host: &HostRoot,
    main: &Path,
    main_doc: DocumentMut,
) -> Result<Vec<PlannedWrite>, InstallError> {
    let plugin = Schema::V2.cri_runtime_plugin();
    let files = load_order(host, main, main_doc)?;
    let (target, mut doc) = files
        .iter()
        .rev()
        .find(|(_, doc)| containerd_schema::defines_plugin(doc, plugin))
        .unwrap_or(&files[0])
        .clone();
    let Some(runtime) = containerd_edit::ensure_runtime(&mut doc, Schema::V2, &target)? else {
        return Ok(Vec::new());
    };
    let summary = if target == main {
        "added the nixlet runtime to the CRI plugin (schema 2, edited in place)".to_string()
    } else {
        format!(
            "added the nixlet runtime to the CRI plugin (schema 2, edited in place): this \
             imported file sets the CRI plugin table that containerd 1.x uses, as it replaces \
             the table of {}",
            main.display()
        )
    };
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

fn plan_schema_3(
    host: &HostRoot,
    main: &Path,
    mut main_doc: DocumentMut,
) -> Result<Vec<PlannedWrite>, InstallError> {
    let drop_in = Path::new(CONTAINERD_DROP_IN);
    let mut writes = Vec::new();
    let wanted = drop_in_text()?;
    let current = managed_file::read_text_optional(&host.local(drop_in))?;
    if current.as_deref() != Some(wanted.as_str()) {
        writes.push(PlannedWrite {
            path: drop_in.to_path_buf(),
            text: wanted,
            role: FileRole::ContainerdDropIn,
            edit: ConfigEdit::default(),
            summary: "drop-in with the nixlet runtime (schema 3)".into(),
        });
    }
    let mut covered = false;
    for entry in containerd_imports::entries(&main_doc, main)? {
        covered |= containerd_imports::covers(&entry, main, Schema::V3, drop_in)?;
    }
    if !covered {
        let entry = drop_in.to_string_lossy();
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

/// The schema 3 drop-in's exact text.
pub fn drop_in_text() -> Result<String, InstallError> {
    let path = Path::new(CONTAINERD_DROP_IN);
    let mut doc = containerd_schema::parse(DROP_IN_HEADER, path)?;
    containerd_edit::add_version(&mut doc, Schema::V3);
    containerd_edit::ensure_runtime(&mut doc, Schema::V3, path)?;
    Ok(doc.to_string())
}

/// The main file of a schema 2 config and every file it imports, in the order containerd loads
/// them (breadth-first, each file once). An imported file that does not exist is skipped, as it adds nothing.
fn load_order(
    host: &HostRoot,
    main: &Path,
    main_doc: DocumentMut,
) -> Result<Vec<(PathBuf, DocumentMut)>, InstallError> {
    let mut loaded = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = std::collections::VecDeque::from([(main.to_path_buf(), Some(main_doc))]);
    while let Some((path, doc)) = pending.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let doc = match doc {
            Some(doc) => doc,
            None => match managed_file::read_text_optional(&host.local(&path))? {
                Some(text) => containerd_schema::parse(&text, &path)?,
                None => {
                    tracing::warn!(path = %path.display(), "imported containerd config does not exist");
                    continue;
                }
            },
        };
        for entry in containerd_imports::entries(&doc, &path)? {
            for import in containerd_imports::expand(host, &entry, &path, Schema::V2)? {
                pending.push_back((import, None));
            }
        }
        loaded.push((path, doc));
    }
    Ok(loaded)
}
