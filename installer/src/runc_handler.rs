//! The runc options of the node's own runc handler, read from containerd's config as containerd
//! reads it, for nixlet's node config `[runtime.runc_options]`.
//!
//! containerd hands a handler's runc options only to an `io.containerd.runc.v2` runtime; nixlet's
//! handler gets a wrapper the runc shim refuses, so nixlet carries the options itself. Copying
//! them from the handler the node's other pods run with (the one `default_runtime_name` names,
//! else `runc`) gives nixlet's containers the same cgroup driver (`SystemdCgroup = true` on
//! kubeadm nodes), OCI runtime and runc root.
//!
//! Which files count follows containerd's merge of `imports`: containerd 1.x uses the CRI plugin
//! table of the last file that sets it, whole; 2.x merges every file key by key, later files
//! winning (both checked with `containerd config dump`).

use std::path::PathBuf;

use nixlet_config::{RuncOptionKind, RUNC_OPTION_KEYS};
use toml_edit::{DocumentMut, Item, Value};

use crate::containerd_schema::{self, Detected, Schema};
use crate::containerd_version::ContainerdVersion;
use crate::names::RUNC_RUNTIME_TYPE;

/// containerd's name for its built-in handler, and the runtime type whose options are runc's.
const RUNC: &str = "runc";

/// What the installer takes from the node's runc handler.
#[derive(Debug, Clone)]
pub struct RuncHandler {
    /// The handler the options come from.
    pub name: String,
    /// Options to copy, by containerd's key names, each with a value that is not the runc
    /// shim's default.
    pub options: Vec<(String, Value)>,
    /// Options not copied, each with why, for the install report.
    pub left_out: Vec<String>,
    /// Why the handler is not the one `default_runtime_name` names, when it is not.
    pub note: Option<String>,
}

/// The runc handler of the config whose files are `files`, in containerd's load order (main
/// file first), with `main_schema` the main file's schema.
pub fn read(
    files: &[(PathBuf, DocumentMut)],
    main_schema: Schema,
    version: &ContainerdVersion,
) -> RuncHandler {
    let tables = cri_containerd_tables(files, main_schema, version);
    let last = |get: &dyn Fn(&Item) -> Option<Item>| tables.iter().rev().find_map(get);
    let runtime_type = |name: &str| {
        last(&|t: &Item| t.get("runtimes")?.get(name)?.get("runtime_type").cloned())
            .and_then(|item| item.as_str().map(str::to_string))
    };
    let default_name = last(&|t: &Item| t.get("default_runtime_name").cloned())
        .and_then(|item| item.as_str().map(str::to_string))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| RUNC.to_string());
    // A handler without runtime_type is runc's only when it is containerd's own `runc` entry.
    let is_runc = |name: &str| match runtime_type(name) {
        Some(kind) => kind == RUNC_RUNTIME_TYPE,
        None => name == RUNC,
    };
    let (name, note) = if is_runc(&default_name) {
        (default_name, None)
    } else {
        let kind = runtime_type(&default_name).unwrap_or_else(|| "no runtime_type".into());
        (
            RUNC.to_string(),
            Some(format!(
                "the default handler `{default_name}` is not a runc handler ({kind}), so the \
                 options of `{RUNC}` were taken"
            )),
        )
    };

    // Later files win key by key (with 1.x only one table is left to read).
    let mut merged: Vec<(String, Value)> = Vec::new();
    for table in &tables {
        let Some(options) = table
            .get("runtimes")
            .and_then(|runtimes| runtimes.get(&name))
            .and_then(|runtime| runtime.get("options"))
            .and_then(Item::as_table_like)
        else {
            continue;
        };
        for (key, item) in options.iter() {
            let Some(value) = item.as_value() else {
                continue;
            };
            let mut value = value.clone();
            value.decor_mut().clear();
            match merged.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => merged.push((key.to_string(), value)),
            }
        }
    }

    let mut handler = RuncHandler {
        name,
        options: Vec::new(),
        left_out: Vec::new(),
        note,
    };
    for (key, value) in merged {
        match classify(&key, &value) {
            Copy::Yes(value) => handler.options.push((key, value)),
            Copy::Default => {}
            Copy::No(why) => handler.left_out.push(format!(
                "{key} = {value} of handler `{}`: {why}",
                handler.name
            )),
        }
    }
    handler
}

enum Copy {
    Yes(Value),
    /// The runc shim's default: copying it would change nothing (and the node config refuses
    /// empty paths).
    Default,
    No(String),
}

fn classify(key: &str, value: &Value) -> Copy {
    let is_default = matches!(value, Value::Boolean(b) if !*b.value())
        || matches!(value, Value::String(s) if s.value().is_empty())
        || matches!(value, Value::Integer(i) if *i.value() == 0);
    let Some((_, kind)) = RUNC_OPTION_KEYS.iter().find(|(known, _)| *known == key) else {
        if is_default {
            return Copy::Default;
        }
        let removed = if key == "CriuPath" {
            " (containerd 2.0 removed it; runc finds criu on its PATH)"
        } else {
            ""
        };
        return Copy::No(format!(
            "nixlet's node config has no runc option {key}{removed}"
        ));
    };
    if is_default {
        return Copy::Default;
    }
    match (kind, value) {
        (RuncOptionKind::Bool, Value::Boolean(b)) => Copy::Yes(Value::from(*b.value())),
        (RuncOptionKind::String, Value::String(s)) => {
            if key == "Root" && !s.value().starts_with('/') {
                return Copy::No("not an absolute path".into());
            }
            Copy::Yes(Value::from(s.value().as_str()))
        }
        (RuncOptionKind::U32, Value::Integer(i)) if u32::try_from(*i.value()).is_ok() => {
            Copy::Yes(Value::from(*i.value()))
        }
        (kind, _) => Copy::No(format!(
            "not {}",
            match kind {
                RuncOptionKind::Bool => "a boolean",
                RuncOptionKind::String => "a string",
                RuncOptionKind::U32 => "an unsigned 32-bit integer",
            }
        )),
    }
}

/// The CRI plugin's `containerd` table of each file that counts, in load order.
fn cri_containerd_tables(
    files: &[(PathBuf, DocumentMut)],
    main_schema: Schema,
    version: &ContainerdVersion,
) -> Vec<Item> {
    let table_of = |doc: &DocumentMut| -> Option<Item> {
        // An imported file keeps its own schema; one without `version` is read like the main.
        let schema = match containerd_schema::detect(doc, std::path::Path::new("")) {
            Ok(Detected::Schema(schema)) => schema,
            _ => main_schema,
        };
        doc.get("plugins")?
            .get(schema.cri_runtime_plugin())?
            .get("containerd")
            .cloned()
    };
    if version.merges_plugin_tables() {
        files.iter().filter_map(|(_, doc)| table_of(doc)).collect()
    } else {
        let effective = files
            .iter()
            .rev()
            .find(|(_, doc)| {
                containerd_schema::defines_plugin(doc, main_schema.cri_runtime_plugin())
            })
            .or(files.first());
        effective
            .and_then(|(_, doc)| table_of(doc))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(version: &str, files: &[&str]) -> RuncHandler {
        let docs: Vec<(PathBuf, DocumentMut)> = files
            .iter()
            .enumerate()
            .map(|(i, text)| (PathBuf::from(format!("/f{i}.toml")), text.parse().unwrap()))
            .collect();
        let schema = match containerd_schema::detect(&docs[0].1, std::path::Path::new("")) {
            Ok(Detected::Schema(schema)) => schema,
            _ => Schema::V2,
        };
        read(&docs, schema, &ContainerdVersion::parse(version).unwrap())
    }

    fn copied(handler: &RuncHandler) -> Vec<String> {
        handler
            .options
            .iter()
            .map(|(key, value)| format!("{key} = {value}"))
            .collect()
    }

    #[test]
    fn kubeadm_systemd_cgroup_is_copied() {
        let h = handler(
            "1.6.20",
            &["version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n"],
        );
        assert_eq!(h.name, "runc");
        assert_eq!(copied(&h), ["SystemdCgroup = true"]);
        assert!(h.left_out.is_empty() && h.note.is_none());
    }

    #[test]
    fn a_generated_default_config_copies_nothing_and_reports_nothing() {
        // `containerd config default` of 1.6: every option at its zero value, CriuPath included.
        let h = handler(
            "1.6.20",
            &[r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = ""
      CriuImagePath = ""
      CriuPath = ""
      IoGid = 0
      NoPivotRoot = false
      Root = ""
      SystemdCgroup = false
"#],
        );
        assert!(h.options.is_empty(), "{h:?}");
        assert!(h.left_out.is_empty(), "{h:?}");
    }

    #[test]
    fn the_default_handler_is_followed_and_unknown_keys_are_left_out() {
        let h = handler(
            "2.1.9",
            &[r#"version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'gpu'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gpu]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gpu.options]
      BinaryName = '/usr/bin/nvidia-container-runtime'
      CriuPath = '/usr/sbin/criu'
      IoUid = 1000
      IoGid = -1
      Root = 'run/runc'
      SystemdCgroup = 'yes'
"#],
        );
        assert_eq!(h.name, "gpu");
        assert_eq!(
            copied(&h),
            [
                "BinaryName = \"/usr/bin/nvidia-container-runtime\"",
                "IoUid = 1000"
            ]
        );
        assert_eq!(
            h.left_out,
            [
                "CriuPath = '/usr/sbin/criu' of handler `gpu`: nixlet's node config has no runc option CriuPath (containerd 2.0 removed it; runc finds criu on its PATH)",
                "IoGid = -1 of handler `gpu`: not an unsigned 32-bit integer",
                "Root = 'run/runc' of handler `gpu`: not an absolute path",
                "SystemdCgroup = 'yes' of handler `gpu`: not a boolean",
            ]
        );
    }

    #[test]
    fn a_default_handler_that_is_not_runc_falls_back_to_runc() {
        let h = handler(
            "2.1.9",
            &[r#"version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'kata'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
    runtime_type = 'io.containerd.kata.v2'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    SystemdCgroup = true
"#],
        );
        assert_eq!(h.name, "runc");
        assert_eq!(copied(&h), ["SystemdCgroup = true"]);
        assert_eq!(
            h.note.as_deref(),
            Some("the default handler `kata` is not a runc handler (io.containerd.kata.v2), so the options of `runc` were taken")
        );
    }

    #[test]
    fn containerd_2_merges_imported_options_key_by_key() {
        let main = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\nSystemdCgroup = true\nRoot = '/x'\n";
        let drop_in = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\nBinaryName = 'crun'\nRoot = '/y'\n";
        let h = handler("2.1.9", &[main, drop_in]);
        assert_eq!(
            copied(&h),
            [
                "SystemdCgroup = true",
                "Root = \"/y\"",
                "BinaryName = \"crun\""
            ]
        );
    }

    #[test]
    fn containerd_1_uses_only_the_last_file_that_sets_the_cri_table() {
        let main = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n";
        let drop_in = "[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"pause\"\n";
        assert!(handler("1.7.24", &[main, drop_in]).options.is_empty());
        assert_eq!(
            copied(&handler("2.1.9", &[main, drop_in])),
            ["SystemdCgroup = true"]
        );
    }
}
