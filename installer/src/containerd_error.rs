//! What can be wrong with a containerd config file that nixlet is asked to edit. Every message
//! names the file, and the key or value at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("containerd config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml_edit::TomlError>,
    },
    #[error(
        "containerd config {} has no `version`, so containerd reads it as schema 1, which nixlet \
         does not edit: migrate it to `version = 2` (or `containerd config migrate` with containerd \
         2.x) and run the installer again",
        path.display()
    )]
    SchemaOne { path: PathBuf },
    #[error("containerd config {}: `version = {version}` is not a schema nixlet edits (2, 3 or 4)", path.display())]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error(
        "containerd config {} declares `version = {declared}`, which the running containerd \
         {running} cannot read (it reads up to version {newest}; version {declared} needs \
         containerd {first_reader} or later): containerd would not start with it, so nixlet \
         changes nothing; write the file for schema {newest} (or upgrade containerd) and run \
         the installer again",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        declared: i64,
        running: String,
        newest: i64,
        first_reader: &'static str,
    },
    #[error(
        "containerd config {}: `{key}` is not a standard table, so the nixlet runtime cannot be \
         added under it; add it by hand",
        path.display()
    )]
    NotATable { path: PathBuf, key: String },
    #[error("containerd config {}: `imports` is not an array of strings", path.display())]
    BadImports { path: PathBuf },
    #[error("containerd config {}: import pattern {pattern:?}: {message}", path.display())]
    BadImportPattern {
        path: PathBuf,
        pattern: String,
        message: String,
    },
    #[error("containerd config {}: recorded value {value:?} of `{key}` does not parse", path.display())]
    BadRecordedValue {
        path: PathBuf,
        key: String,
        value: String,
    },
}
