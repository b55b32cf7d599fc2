//! The edit that adds nixlet's runtime to a containerd config document, and its inverse.
//!
//! The document is edited as TOML syntax (`toml_edit`), not as data, so every other setting,
//! comment, blank line and the order of tables survive byte for byte. A new table is placed after
//! its siblings and copies their indentation, so the result reads as if written by hand. What the
//! edit did is returned as a [`ConfigEdit`] that the install state keeps: uninstall restores the
//! backup when the file is still exactly what install wrote, and otherwise applies
//! [`revert`] to the file as it is then, keeping whatever else changed meanwhile.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml_edit::{Array, DocumentMut, Item, Table, Value};

use crate::containerd_error::ConfigError;
use crate::containerd_schema::Schema;
use crate::names::{ANNOTATION_PATTERNS, RUNC_RUNTIME_TYPE, RUNTIME_TYPE, SHIM_BINARY};
use crate::runtime_form::RuntimeForm;

const ANNOTATION_KEYS: [&str; 2] = ["pod_annotations", "container_annotations"];
/// containerd's built-in runtime and its type.
const DEFAULT_RUNTIME: &str = "runc";
const DEFAULT_RUNTIME_TYPE: &str = "io.containerd.runc.v2";
/// Key indentation of a new runtime table without siblings to copy from.
const DEFAULT_KEY_INDENT: &str = "  ";

/// Everything install changed in one containerd config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigEdit {
    /// The file did not exist; install wrote it whole.
    #[serde(default, skip_serializing_if = "is_false")]
    pub created_file: bool,
    /// The file had no settings and install added `version`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub added_version: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeEdit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportEdit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEdit {
    /// Key path of nixlet's runtime table.
    pub table: Vec<String>,
    /// Tables that did not exist, as key paths, outermost first; the runtime table itself is
    /// among them when install created it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_tables: Vec<Vec<String>>,
    /// Keys install set in a runtime table that already existed, with the TOML text of the
    /// value each had before (`None`: the key was absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous: BTreeMap<String, Option<String>>,
    /// Install also wrote containerd's default `runc` runtime next to nixlet's, because it
    /// created the `runtimes` table (see [`ensure_runtime`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub default_runc: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportEdit {
    /// The entry install appended to `imports`.
    pub entry: String,
    /// `imports` did not exist; install created it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub created_key: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl ConfigEdit {
    pub fn is_empty(&self) -> bool {
        *self == ConfigEdit::default()
    }

    /// Folds a later run's edit into what an earlier run recorded. What existed before the
    /// first run is what uninstall must come back to, so earlier records win.
    pub fn merge(self, later: ConfigEdit) -> ConfigEdit {
        ConfigEdit {
            created_file: self.created_file || later.created_file,
            added_version: self.added_version || later.added_version,
            runtime: match (self.runtime, later.runtime) {
                (Some(mut earlier), Some(later)) => {
                    for table in later.created_tables {
                        if !earlier.created_tables.contains(&table) {
                            earlier.created_tables.push(table);
                        }
                    }
                    for (key, value) in later.previous {
                        earlier.previous.entry(key).or_insert(value);
                    }
                    Some(earlier)
                }
                (earlier, later) => earlier.or(later),
            },
            import: self.import.or(later.import),
        }
    }
}

/// Adds `version = N` to a file without settings. Its comments (the document's trailing text
/// when it has no items) stay above the new key.
pub fn add_version(doc: &mut DocumentMut, schema: Schema) {
    let comments = doc.trailing().as_str().unwrap_or_default().to_string();
    doc.set_trailing("");
    doc.insert("version", toml_edit::value(schema.version()));
    if let Some(mut key) = doc.key_mut("version") {
        key.leaf_decor_mut().set_prefix(comments);
    }
}

/// Makes the document declare nixlet's runtime for `schema` in `form`: runtime type (and path)
/// and both annotation lists (patterns already listed are kept; missing ones are appended).
/// `None` when nothing had to change.
///
/// A file without a `runtimes` table runs on containerd's built-in list, which holds only
/// `runc`. containerd 1.x replaces that whole list with the file's as soon as the file lists any
/// runtime (`replaces_list`; checked with `containerd config dump`), so adding only nixlet's
/// would leave the node without `runc`, its default runtime. When the edit creates `runtimes`
/// for such a containerd, it therefore also writes `runc` as containerd defines it. containerd
/// 2.x adds the file's runtimes to its built-in list (checked the same way), so there the file
/// is left without a `runc` it never had.
pub fn ensure_runtime(
    doc: &mut DocumentMut,
    schema: Schema,
    form: &RuntimeForm,
    replaces_list: bool,
    path: &Path,
) -> Result<Option<RuntimeEdit>, ConfigError> {
    let keys: Vec<String> = schema
        .runtime_table_path()
        .iter()
        .map(|k| k.to_string())
        .collect();
    let created_tables = create_tables(doc.as_table_mut(), &keys, path)?;
    let created_runtime = created_tables.last() == Some(&keys);
    let style = created_runtime.then(|| HeaderStyle::for_new_table(doc, &keys));
    let runtimes_path = &keys[..keys.len() - 1];
    let default_runc =
        replaces_list && created_tables.iter().any(|t| t.as_slice() == runtimes_path);
    if default_runc {
        let style = style
            .as_ref()
            .expect("runtimes created, so the runtime table too");
        let runtimes = table_at_mut(doc.as_table_mut(), runtimes_path).expect("created above");
        runtimes.insert(DEFAULT_RUNTIME, Item::Table(default_runc_table(style)));
        // Before nixlet's, as containerd lists it first.
        runtimes.sort_values_by(|a, _, b, _| {
            (a.get() != DEFAULT_RUNTIME).cmp(&(b.get() != DEFAULT_RUNTIME))
        });
    }
    let table = table_at_mut(doc.as_table_mut(), &keys).expect("created above");
    let key_indent = match &style {
        Some(style) => {
            table.decor_mut().set_prefix(style.prefix.clone());
            style.key_indent.clone()
        }
        None => first_key_indent(table).unwrap_or_else(|| DEFAULT_KEY_INDENT.to_string()),
    };

    let mut previous = BTreeMap::new();
    match form {
        RuntimeForm::NixletType => {
            if !declared_as_runc_at_nixlets_shim(table) {
                set_string(table, "runtime_type", RUNTIME_TYPE, &mut previous);
            }
        }
        RuntimeForm::RuncTypeAt(shim) => {
            set_string(table, "runtime_type", RUNC_RUNTIME_TYPE, &mut previous);
            let shim = shim.to_string_lossy();
            set_string(table, "runtime_path", &shim, &mut previous);
        }
    }
    for key in ANNOTATION_KEYS {
        ensure_patterns(table, key, &mut previous, path)?;
    }
    for (key, before) in &previous {
        if before.is_none() {
            if let Some(mut key) = table.key_mut(key) {
                key.leaf_decor_mut().set_prefix(key_indent.clone());
            }
        }
    }
    if created_runtime {
        // Removing the table undoes every key in it.
        previous.clear();
    }
    if created_tables.is_empty() && previous.is_empty() {
        return Ok(None);
    }
    Ok(Some(RuntimeEdit {
        table: keys,
        created_tables,
        previous,
        default_runc,
    }))
}

/// `runc` as containerd 1.x defines it when a config lists no runtime.
fn default_runc_table(style: &HeaderStyle) -> Table {
    let mut table = Table::new();
    let indent = style.prefix.rsplit('\n').next().unwrap_or_default();
    table.decor_mut().set_prefix(format!(
        "{}# containerd's default runtime, written by nixlet's installer: a file that lists\n\
         {indent}# any runtime replaces containerd's built-in list, which holds only this one.\n{indent}",
        style.prefix
    ));
    table.insert("runtime_type", toml_edit::value(DEFAULT_RUNTIME_TYPE));
    if let Some(mut key) = table.key_mut("runtime_type") {
        key.leaf_decor_mut().set_prefix(style.key_indent.clone());
    }
    table
}

/// Creates the missing tables along `keys`; the intermediate ones implicit, so that they exist
/// only through the header of the last. Returns the key paths it created, outermost first.
fn create_tables(
    root: &mut Table,
    keys: &[String],
    path: &Path,
) -> Result<Vec<Vec<String>>, ConfigError> {
    let mut created = Vec::new();
    let mut table = root;
    for (depth, key) in keys.iter().enumerate() {
        if !table.contains_key(key) {
            let mut new_table = Table::new();
            new_table.set_implicit(depth + 1 < keys.len());
            table.insert(key, Item::Table(new_table));
            created.push(keys[..=depth].to_vec());
        }
        let parent = table;
        table = match parent.get_mut(key) {
            Some(Item::Table(child)) => child,
            _ => {
                return Err(ConfigError::NotATable {
                    path: path.to_path_buf(),
                    key: dotted(&keys[..=depth]),
                })
            }
        };
    }
    Ok(created)
}

/// How a new table's header and keys are laid out so that it looks like its neighbours.
struct HeaderStyle {
    /// Blank line (when the file separates tables with one) and indentation before `[`.
    prefix: String,
    key_indent: String,
}

impl HeaderStyle {
    /// Indentation follows the first sibling table (another runtime), or else the table
    /// rendered just before the new one; a blank line precedes the header when a neighbouring
    /// header has one.
    fn for_new_table(doc: &DocumentMut, keys: &[String]) -> HeaderStyle {
        let headers = rendered_headers(doc);
        let index = headers.iter().position(|(path, _)| path.as_slice() == keys);
        let before = index.and_then(|i| i.checked_sub(1)).map(|i| headers[i].1);
        let sibling = headers
            .iter()
            .find(|(path, _)| {
                path.len() == keys.len() && path[..keys.len() - 1] == keys[..keys.len() - 1]
            })
            .filter(|(path, _)| path.as_slice() != keys)
            .map(|(_, table)| *table);
        let Some(model) = sibling.or(before) else {
            return HeaderStyle {
                prefix: "\n".into(),
                key_indent: DEFAULT_KEY_INDENT.into(),
            };
        };
        let indent = header_indent(model);
        let key_indent = match first_key_indent(model) {
            Some(keys) if keys.starts_with(&indent) => keys,
            _ => format!("{indent}{DEFAULT_KEY_INDENT}"),
        };
        let after = index
            .and_then(|i| headers.get(i + 1))
            .map(|(_, table)| *table);
        let spaced = |table: &Table| {
            table
                .decor()
                .prefix()
                .and_then(|p| p.as_str())
                .is_some_and(|p| p.starts_with('\n'))
        };
        let blank = before.is_none_or(spaced) || after.is_some_and(spaced);
        HeaderStyle {
            prefix: format!("{}{indent}", if blank { "\n" } else { "" }),
            key_indent,
        }
    }
}

/// Tables that print a header, in the order `toml_edit` prints them: depth first, a table
/// without a position right after the table visited before it, then a stable sort by position.
fn rendered_headers(doc: &DocumentMut) -> Vec<(Vec<String>, &Table)> {
    fn visit<'t>(
        table: &'t Table,
        path: &mut Vec<String>,
        last_position: &mut usize,
        out: &mut Vec<(usize, Vec<String>, &'t Table)>,
    ) {
        if !table.is_dotted() {
            if let Some(position) = table.position() {
                *last_position = position;
            }
            out.push((*last_position, path.clone(), table));
        }
        for (key, item) in table.iter() {
            let children: Vec<&Table> = match item {
                Item::Table(child) => vec![child],
                Item::ArrayOfTables(array) => array.iter().collect(),
                _ => continue,
            };
            for child in children {
                path.push(key.to_string());
                visit(child, path, last_position, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    visit(doc.as_table(), &mut Vec::new(), &mut 0, &mut out);
    out.sort_by_key(|(position, _, _)| *position);
    out.into_iter()
        .filter(|(_, path, table)| {
            !path.is_empty()
                && (!table.is_implicit() || table.iter().any(|(_, item)| item.is_value()))
        })
        .map(|(_, path, table)| (path, table))
        .collect()
}

fn header_indent(table: &Table) -> String {
    table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .map(|p| p.rsplit('\n').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Appends `entry` to the top-level `imports` (creating it right after `version` if absent).
/// `None` when the entry is already listed.
pub fn ensure_import(
    doc: &mut DocumentMut,
    entry: &str,
    path: &Path,
) -> Result<Option<ImportEdit>, ConfigError> {
    let bad_imports = || ConfigError::BadImports {
        path: path.to_path_buf(),
    };
    if let Some(item) = doc.get_mut("imports") {
        let imports = item.as_array_mut().ok_or_else(bad_imports)?;
        if imports.iter().any(|value| value.as_str() == Some(entry)) {
            return Ok(None);
        }
        let entry_value = string_like(imports.get(0), entry);
        imports.push(entry_value);
        return Ok(Some(ImportEdit {
            entry: entry.to_string(),
            created_key: false,
        }));
    }
    let order: Vec<String> = doc.iter().map(|(key, _)| key.to_string()).collect();
    let rank = |key: &str| -> usize {
        match key {
            // Right after `version`, or first when there is none.
            "imports" => order
                .iter()
                .position(|k| k == "version")
                .map_or(0, |i| 2 * i + 3),
            _ => 2 * order.iter().position(|k| k == key).unwrap_or(order.len()) + 2,
        }
    };
    doc.insert("imports", toml_edit::value(Array::from_iter([entry])));
    doc.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
    Ok(Some(ImportEdit {
        entry: entry.to_string(),
        created_key: true,
    }))
}

/// Undoes `edit` on the document as it is now, leaving everything else alone.
pub fn revert(doc: &mut DocumentMut, edit: &ConfigEdit, path: &Path) -> Result<(), ConfigError> {
    if let Some(import) = &edit.import {
        if let Some(imports) = doc.get_mut("imports").and_then(Item::as_array_mut) {
            imports.retain(|value| value.as_str() != Some(&import.entry));
            if import.created_key && imports.is_empty() {
                doc.remove("imports");
            }
        }
    }
    if let Some(runtime) = &edit.runtime {
        revert_runtime(doc, runtime, path)?;
    }
    if edit.added_version {
        doc.remove("version");
    }
    Ok(())
}

fn revert_runtime(
    doc: &mut DocumentMut,
    runtime: &RuntimeEdit,
    path: &Path,
) -> Result<(), ConfigError> {
    if runtime.default_runc {
        let mut runc = runtime.table.clone();
        if let Some(last) = runc.last_mut() {
            *last = DEFAULT_RUNTIME.to_string();
        }
        remove_table(doc.as_table_mut(), &runc);
    }
    if runtime.created_tables.contains(&runtime.table) {
        remove_table(doc.as_table_mut(), &runtime.table);
    } else if let Some(table) = table_at_mut(doc.as_table_mut(), &runtime.table) {
        for (key, before) in &runtime.previous {
            match before {
                None => {
                    table.remove(key);
                }
                Some(text) => {
                    let value =
                        text.parse::<Value>()
                            .map_err(|_| ConfigError::BadRecordedValue {
                                path: path.to_path_buf(),
                                key: key.clone(),
                                value: text.clone(),
                            })?;
                    replace_value(table, key, value);
                }
            }
        }
    }
    // Tables install created only to hold the runtime go too, unless something was put in them
    // since; innermost first so that emptied parents follow.
    for created in runtime.created_tables.iter().rev() {
        if table_at_mut(doc.as_table_mut(), created).is_some_and(|table| table.is_empty()) {
            remove_table(doc.as_table_mut(), created);
        }
    }
    Ok(())
}

fn first_key_indent(table: &Table) -> Option<String> {
    table.iter().find_map(|(key, item)| {
        item.is_value()
            .then(|| table.key(key))
            .flatten()
            .and_then(|key| key.leaf_decor().prefix())
            .and_then(|prefix| prefix.as_str())
            .map(|prefix| {
                // Only the indentation of the key's own line, not comment lines above it.
                prefix.rsplit('\n').next().unwrap_or_default().to_string()
            })
    })
}

/// The runc form ([`RuntimeForm::RuncTypeAt`]) where install writes the first form: written by
/// an operator, or by install while containerd was 2.0-2.3. It runs nixlet too (from 1.7), so
/// install keeps it instead of turning it back into the first form at every DaemonSet start.
fn declared_as_runc_at_nixlets_shim(table: &Table) -> bool {
    let string = |key: &str| table.get(key).and_then(Item::as_str);
    string("runtime_type") == Some(RUNC_RUNTIME_TYPE)
        && string("runtime_path")
            .is_some_and(|path| Path::new(path).file_name() == Some(SHIM_BINARY.as_ref()))
}

fn set_string(
    table: &mut Table,
    key: &str,
    wanted: &str,
    previous: &mut BTreeMap<String, Option<String>>,
) {
    match table.get(key) {
        Some(item) if item.as_str() == Some(wanted) => {}
        Some(item) => {
            previous.insert(key.to_string(), Some(value_text(item)));
            replace_value(table, key, Value::from(wanted));
        }
        None => {
            previous.insert(key.to_string(), None);
            table.insert(key, toml_edit::value(wanted));
        }
    }
}

fn ensure_patterns(
    table: &mut Table,
    key: &str,
    previous: &mut BTreeMap<String, Option<String>>,
    path: &Path,
) -> Result<(), ConfigError> {
    let Some(item) = table.get_mut(key) else {
        previous.insert(key.to_string(), None);
        table.insert(key, toml_edit::value(Array::from_iter(ANNOTATION_PATTERNS)));
        return Ok(());
    };
    let before = value_text(item);
    let list = item.as_array_mut().ok_or_else(|| ConfigError::NotATable {
        path: path.to_path_buf(),
        key: key.to_string(),
    })?;
    let missing: Vec<&str> = ANNOTATION_PATTERNS
        .into_iter()
        .filter(|pattern| !list.iter().any(|value| value.as_str() == Some(pattern)))
        .collect();
    if !missing.is_empty() {
        previous.insert(key.to_string(), Some(before));
        for pattern in missing {
            list.push(pattern);
        }
    }
    Ok(())
}

/// `text` as a TOML string quoted like `sample`: a literal string ('…') next to literal strings.
fn string_like(sample: Option<&Value>, text: &str) -> Value {
    let literal = match sample {
        Some(Value::String(sample)) => sample
            .as_repr()
            .and_then(|repr| repr.as_raw().as_str())
            .is_some_and(|raw| raw.starts_with('\'')),
        _ => false,
    };
    if literal && !text.contains(['\'', '\n']) {
        if let Ok(value) = format!("'{text}'").parse::<Value>() {
            return value;
        }
    }
    Value::from(text)
}

/// A value's TOML text without the whitespace and comments around it.
fn value_text(item: &Item) -> String {
    match item.as_value() {
        Some(value) => {
            let mut value = value.clone();
            value.decor_mut().clear();
            value.to_string()
        }
        None => item.to_string().trim().to_string(),
    }
}

/// Replaces a value but keeps the spacing and comment around it.
fn replace_value(table: &mut Table, key: &str, mut value: Value) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

fn table_at_mut<'a>(root: &'a mut Table, keys: &[String]) -> Option<&'a mut Table> {
    let mut table = root;
    for key in keys {
        table = table.get_mut(key)?.as_table_mut()?;
    }
    Some(table)
}

fn remove_table(root: &mut Table, keys: &[String]) {
    if let Some((last, parents)) = keys.split_last() {
        if let Some(parent) = table_at_mut(root, parents) {
            parent.remove(last);
        }
    }
}

fn dotted(keys: &[String]) -> String {
    keys.iter()
        .map(|key| {
            if key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                key.clone()
            } else {
                format!("{key:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd_schema::parse;

    const PATH: &str = "/etc/containerd/config.toml";

    fn add(text: &str, schema: Schema) -> (String, Option<RuntimeEdit>) {
        let mut doc = parse(text, Path::new(PATH)).unwrap();
        let edit = ensure_runtime(
            &mut doc,
            schema,
            &RuntimeForm::NixletType,
            schema == Schema::V2,
            Path::new(PATH),
        )
        .unwrap();
        (doc.to_string(), edit)
    }

    #[test]
    fn new_runtime_goes_after_its_siblings_with_their_indentation() {
        let before = r#"version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"#;
        let (after, edit) = add(before, Schema::V2);
        assert_eq!(
            after,
            r#"version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nixlet]
    runtime_type = "io.containerd.nixlet.v2"
    pod_annotations = ["nixlet.dev/*", "flox.dev/*"]
    container_annotations = ["nixlet.dev/*", "flox.dev/*"]

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
"#
        );
        let edit = edit.unwrap();
        assert_eq!(edit.created_tables, vec![edit.table.clone()]);
        assert!(edit.previous.is_empty());
    }

    #[test]
    fn existing_runtime_keeps_its_other_keys_and_extra_patterns() {
        let before = r#"version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet]
  runtime_type = "io.containerd.runc.v2" # set by hand
  pod_annotations = ["example.com/*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet.options]
    BinaryName = "crun"
"#;
        let (after, edit) = add(before, Schema::V3);
        assert_eq!(
            after,
            r#"version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet]
  runtime_type = "io.containerd.nixlet.v2" # set by hand
  pod_annotations = ["example.com/*", "nixlet.dev/*", "flox.dev/*"]
  container_annotations = ["nixlet.dev/*", "flox.dev/*"]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet.options]
    BinaryName = "crun"
"#
        );
        let edit = edit.unwrap();
        assert!(edit.created_tables.is_empty());
        assert_eq!(
            edit.previous,
            BTreeMap::from([
                ("container_annotations".to_string(), None),
                (
                    "pod_annotations".to_string(),
                    Some("[\"example.com/*\"]".to_string())
                ),
                (
                    "runtime_type".to_string(),
                    Some("\"io.containerd.runc.v2\"".to_string())
                ),
            ])
        );

        let mut doc = parse(&after, Path::new(PATH)).unwrap();
        let whole = ConfigEdit {
            runtime: Some(edit),
            ..ConfigEdit::default()
        };
        revert(&mut doc, &whole, Path::new(PATH)).unwrap();
        assert_eq!(doc.to_string(), before);
    }

    #[test]
    fn a_runc_type_declaration_of_nixlets_shim_is_kept() {
        let before = r#"version = 3
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet]
  runtime_type = "io.containerd.runc.v2"
  runtime_path = "/usr/local/bin/containerd-shim-nixlet-v2"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nixlet.options]
    SystemdCgroup = true
"#;
        let (after, edit) = add(before, Schema::V3);
        assert!(
            after.contains("runtime_type = \"io.containerd.runc.v2\"")
                && after.contains("pod_annotations = [\"nixlet.dev/*\", \"flox.dev/*\"]"),
            "{after}"
        );
        assert!(!edit.unwrap().previous.contains_key("runtime_type"));
        // A runc.v2 runtime at another binary is not nixlet's: install turns it into nixlet's.
        let (after, _) = add(
            &before.replace("containerd-shim-nixlet-v2", "containerd-shim-runc-v2"),
            Schema::V3,
        );
        assert!(
            after.contains("runtime_type = \"io.containerd.nixlet.v2\""),
            "{after}"
        );
    }

    #[test]
    fn a_runtime_already_complete_is_no_edit() {
        let (once, _) = add("version = 2\n", Schema::V2);
        let (twice, edit) = add(&once, Schema::V2);
        assert_eq!(once, twice);
        assert_eq!(edit, None);
    }

    #[test]
    fn revert_of_a_created_table_removes_the_tables_it_created() {
        let before =
            "version = 2\n\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/opt\"\n";
        let (after, edit) = add(before, Schema::V2);
        assert_eq!(edit.as_ref().unwrap().created_tables.len(), 4);
        let mut doc = parse(&after, Path::new(PATH)).unwrap();
        let edit = ConfigEdit {
            runtime: edit,
            ..ConfigEdit::default()
        };
        revert(&mut doc, &edit, Path::new(PATH)).unwrap();
        assert_eq!(doc.to_string(), before);
    }

    #[test]
    fn inline_ancestor_is_refused_by_name() {
        let mut doc = parse(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = { snapshotter = \"x\" }\n",
            Path::new(PATH),
        )
        .unwrap();
        let error = ensure_runtime(
            &mut doc,
            Schema::V2,
            &RuntimeForm::NixletType,
            true,
            Path::new(PATH),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "containerd config /etc/containerd/config.toml: `plugins.\"io.containerd.grpc.v1.cri\".containerd` is not a standard table, so the nixlet runtime cannot be added under it; add it by hand"
        );
    }

    #[test]
    fn comments_of_a_blank_file_stay_above_the_version() {
        let mut doc = parse("# managed by hand\n", Path::new(PATH)).unwrap();
        add_version(&mut doc, Schema::V2);
        assert_eq!(doc.to_string(), "# managed by hand\nversion = 2\n");
    }

    #[test]
    fn import_is_created_after_version_and_reverted() {
        let before = "version = 3\nroot = \"/var/lib/containerd\"\n\n[plugins.x]\n  a = 1\n";
        let mut doc = parse(before, Path::new(PATH)).unwrap();
        let edit = ensure_import(
            &mut doc,
            "/etc/containerd/conf.d/nixlet.toml",
            Path::new(PATH),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            doc.to_string(),
            "version = 3\nimports = [\"/etc/containerd/conf.d/nixlet.toml\"]\nroot = \"/var/lib/containerd\"\n\n[plugins.x]\n  a = 1\n"
        );
        let edit = ConfigEdit {
            import: Some(edit),
            ..ConfigEdit::default()
        };
        revert(&mut doc, &edit, Path::new(PATH)).unwrap();
        assert_eq!(doc.to_string(), before);
    }

    #[test]
    fn earlier_records_win_when_merging() {
        let first = ConfigEdit {
            import: Some(ImportEdit {
                entry: "a".into(),
                created_key: true,
            }),
            ..ConfigEdit::default()
        };
        let second = ConfigEdit {
            import: Some(ImportEdit {
                entry: "a".into(),
                created_key: false,
            }),
            added_version: true,
            ..ConfigEdit::default()
        };
        let merged = first.clone().merge(second);
        assert_eq!(merged.import, first.import);
        assert!(merged.added_version);
    }
}
