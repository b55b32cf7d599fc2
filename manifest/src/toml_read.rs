//! Small readers for values of `manifest.toml`, each naming the full dotted key it reads so
//! that every error says exactly which key is at fault.

use toml::{Table, Value};

use crate::manifest::ManifestError;

pub(crate) fn as_table<'a>(key: &str, value: &'a Value) -> Result<&'a Table, ManifestError> {
    value
        .as_table()
        .ok_or_else(|| wrong_type(key, "a table", value))
}

pub(crate) fn wrong_type(key: &str, expected: &'static str, found: &Value) -> ManifestError {
    ManifestError::WrongType {
        key: key.to_string(),
        expected,
        found: found.type_str(),
    }
}

/// `prefix.name`, or `name` at the top level.
pub(crate) fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Fails on the alphabetically first key of `table` not in `allowed`, so that a table with
/// several unknown keys always gives the same error.
pub(crate) fn check_keys(
    prefix: &str,
    table: &Table,
    allowed: &[&str],
) -> Result<(), ManifestError> {
    let mut unknown: Vec<&String> = table
        .keys()
        .filter(|key| !allowed.contains(&key.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        Some(key) => Err(ManifestError::UnknownKey(join_key(prefix, key))),
        None => Ok(()),
    }
}

pub(crate) fn read_string(key: &str, value: &Value) -> Result<String, ManifestError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(wrong_type(key, "a string", other)),
    }
}

/// A string that must say something: an empty `pkg-path` or `cmd` entry can only be a mistake.
pub(crate) fn read_non_empty_string(key: &str, value: &Value) -> Result<String, ManifestError> {
    let text = read_string(key, value)?;
    if text.is_empty() {
        return Err(ManifestError::Empty(key.to_string()));
    }
    Ok(text)
}

pub(crate) fn read_bool(key: &str, value: &Value) -> Result<bool, ManifestError> {
    match value {
        Value::Boolean(flag) => Ok(*flag),
        other => Err(wrong_type(key, "a boolean", other)),
    }
}

pub(crate) fn read_string_array(key: &str, value: &Value) -> Result<Vec<String>, ManifestError> {
    let expected = "an array of strings";
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(key, expected, value))?;
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(text.clone()),
            other => Err(wrong_type(key, expected, other)),
        })
        .collect()
}

/// A table whose values are all strings, such as `labels`.
pub(crate) fn read_string_table(key: &str, value: &Value) -> Result<(), ManifestError> {
    for (name, item) in as_table(key, value)? {
        read_string(&join_key(key, name), item)?;
    }
    Ok(())
}

/// Flox priorities are unsigned; nixlet keeps them in a `u32`, far beyond any real use.
pub(crate) fn read_priority(key: &str, value: &Value) -> Result<u32, ManifestError> {
    match value {
        Value::Integer(number) => {
            u32::try_from(*number).map_err(|_| ManifestError::PriorityOutOfRange {
                key: key.to_string(),
                value: *number,
            })
        }
        other => Err(wrong_type(key, "an integer", other)),
    }
}
