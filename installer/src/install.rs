//! `nixlet node install`: make a node run the `nixlet` runtime class.
//!
//! Idempotent: every file is compared with what it should be and written only when it differs,
//! so a second run writes nothing, leaves the install state byte for byte as it was and does not
//! restart containerd. Before a file is first replaced its original is recorded (and backed up),
//! and the state is saved before the write, so an interrupted run can still be uninstalled.

use std::fs;
use std::path::{Path, PathBuf};

use crate::containerd_edit::ConfigEdit;
use crate::containerd_imports::{self, RelativeGlobs};
use crate::containerd_plan;
use crate::containerd_probe::{self, RunningContainerd};
use crate::containerd_schema::{self, Detected};
use crate::containerd_version::ContainerdVersion;
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::install_state::{FileRecord, FileRole, InstallState, Original};
use crate::managed_file;
use crate::names::{
    CLI_BINARY, CONTAINERD_CONFIG, DEFAULT_ENVIRONMENTS_DIR, NODE_CONFIG, SHIM_BINARY,
};
use crate::node_config_file;
use crate::report::{Outcome, Report, RestartOutcome};
use crate::restart::ContainerdRestarter;
use crate::runc_handler::{self, RuncHandler};
use crate::runtime_form::RuntimeForm;

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the node's root file system is mounted (`/` on the node itself).
    pub host_root: PathBuf,
    /// Host directory on containerd's `PATH` for the shim and the CLI.
    pub binary_dir: PathBuf,
    /// Directory holding the two binaries to copy: the running `nixlet`'s own.
    pub source_dir: PathBuf,
    /// Node config to install (the DaemonSet's ConfigMap); without it, the node's own config
    /// is kept, or defaults are written when it has none. Either way the runc options of the
    /// node's runc handler are added where the file does not set them.
    pub node_config: Option<PathBuf>,
    /// How to learn which containerd reads the config.
    pub containerd: RunningContainerd,
}

/// Installs; `restarter` is `None` when restarting containerd is left to the operator.
pub fn install(
    options: &InstallOptions,
    restarter: Option<&dyn ContainerdRestarter>,
) -> Result<Report, InstallError> {
    if !options.binary_dir.is_absolute() {
        return Err(InstallError::Io {
            action: "use binary directory",
            path: options.binary_dir.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "must be an absolute path on the host",
            ),
        });
    }
    let host = HostRoot::new(&options.host_root);

    // Everything is read and checked before the first write, so a refused config, a bad node
    // config or a missing binary leaves the node exactly as it was.
    let mut binaries = Vec::new();
    for name in [SHIM_BINARY, CLI_BINARY] {
        let source = options.source_dir.join(name);
        let bytes = fs::read(&source).map_err(InstallError::io("read", &source))?;
        binaries.push((options.binary_dir.join(name), bytes));
    }
    let node_config_source = match &options.node_config {
        Some(source) => {
            let text = fs::read_to_string(source).map_err(InstallError::io("read", source))?;
            node_config_file::validate(&text, source)?;
            Some((source, text))
        }
        None => None,
    };
    let (version, found) = containerd_probe::find(&host, &options.containerd)?;
    version.check_supported()?;
    let form = RuntimeForm::for_release(&version, &options.binary_dir);
    let writes = containerd_plan::plan(&host, &version, &form)?;
    let handler = node_runc_handler(&host, &version)?;

    let state = InstallState::load(&host)?.unwrap_or_default();
    let mut run = Run {
        host: &host,
        recorded: state.clone(),
        state,
        report: Report {
            containerd: Some(format!(
                "{version} ({found}): reads config schema up to {}, starts shims with {}; \
                 nixlet declared as {}",
                version.newest_schema().version(),
                version.bootstrap(),
                form.describe()
            )),
            ..Report::default()
        },
    };
    for (path, bytes) in binaries {
        run.put(
            &path,
            &bytes,
            FileRole::Binary,
            ConfigEdit::default(),
            "installed",
            "up to date",
        )?;
    }

    if writes.is_empty() {
        run.report.push(
            CONTAINERD_CONFIG,
            Outcome::Unchanged("already declares the nixlet runtime".into()),
        );
    }
    let containerd_changed = !writes.is_empty();
    for write in writes {
        run.put(
            &write.path,
            write.text.as_bytes(),
            write.role,
            write.edit,
            &write.summary,
            "",
        )?;
    }

    run.node_config(node_config_source, &handler)?;
    run.ensure_dir(Path::new(DEFAULT_ENVIRONMENTS_DIR))?;

    run.state.restart_pending |= containerd_changed;
    run.checkpoint()?;
    if run.state.restart_pending {
        run.report.restart = match restarter {
            Some(restarter) => {
                restarter.restart()?;
                RestartOutcome::Restarted
            }
            None => RestartOutcome::Skipped,
        };
        run.state.restart_pending = false;
        run.checkpoint()?;
    }
    Ok(run.report)
}

/// The node's runc handler as containerd's config declares it (all defaults without a config).
fn node_runc_handler(
    host: &HostRoot,
    version: &ContainerdVersion,
) -> Result<RuncHandler, InstallError> {
    let main = Path::new(CONTAINERD_CONFIG);
    let doc = match managed_file::read_text_optional(&host.local(main))? {
        Some(text) => containerd_schema::parse(&text, main)?,
        None => containerd_schema::parse("", main)?,
    };
    let schema = match containerd_schema::detect(&doc, main)? {
        Detected::Schema(schema) => schema,
        Detected::Blank => version.new_file_schema(),
    };
    let files = containerd_imports::load_order(host, main, doc, RelativeGlobs::of(version))?;
    Ok(runc_handler::read(&files, schema, version))
}

struct Run<'a> {
    host: &'a HostRoot,
    state: InstallState,
    /// The state as last saved.
    recorded: InstallState,
    report: Report,
}

impl Run<'_> {
    /// Makes the host file `path` hold `bytes`, recording the original first.
    fn put(
        &mut self,
        path: &Path,
        bytes: &[u8],
        role: FileRole,
        edit: ConfigEdit,
        changed: &str,
        unchanged: &str,
    ) -> Result<(), InstallError> {
        let local = self.host.local(path);
        let current = managed_file::read_optional(&local)?;
        if current.as_deref() == Some(bytes) {
            self.report
                .push(path, Outcome::Unchanged(unchanged.to_string()));
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.ensure_dir(parent)?;
        }
        let existing_mode = managed_file::mode_of(&local);
        let mode = match role {
            FileRole::Binary => 0o755,
            _ => existing_mode.unwrap_or(0o644),
        };
        let mut changed = changed.to_string();
        if self.state.record(path).is_none() {
            let original = match &current {
                None => Original::Absent,
                Some(existing) => {
                    let backup = managed_file::backup_path(path);
                    let local_backup = self.host.local(&backup);
                    if managed_file::read_optional(&local_backup)?.is_some() {
                        return Err(InstallError::BackupExists {
                            path: local,
                            backup: local_backup,
                        });
                    }
                    managed_file::write_atomic(
                        &local_backup,
                        existing,
                        existing_mode.unwrap_or(0o644),
                    )?;
                    changed = format!("{changed} (original kept as {})", backup.display());
                    Original::Backup { path: backup }
                }
            };
            self.state.files.push(FileRecord {
                path: path.to_path_buf(),
                role,
                original,
                installed_sha256: String::new(),
                config_edit: None,
            });
            // Written ahead: from here on, uninstall knows where the original is.
            self.checkpoint()?;
        }
        managed_file::write_atomic(&local, bytes, mode)?;
        let record = self
            .state
            .record_mut(path)
            .expect("the record was added above");
        record.installed_sha256 = managed_file::sha256_hex(bytes);
        if role == FileRole::ContainerdConfig {
            let earlier = record.config_edit.take().unwrap_or_default();
            record.config_edit = Some(earlier.merge(edit));
        }
        self.report.push(path, Outcome::Changed(changed));
        Ok(())
    }

    /// Writes the node config: the ConfigMap's, else the node's own (as it was before install,
    /// so that a later run follows containerd's runc options again), else the defaults; each
    /// with the runc handler's options it does not set.
    fn node_config(
        &mut self,
        configmap: Option<(&PathBuf, String)>,
        handler: &RuncHandler,
    ) -> Result<(), InstallError> {
        let path = Path::new(NODE_CONFIG);
        let current = managed_file::read_optional(&self.host.local(path))?;
        // (text to start from, report when written, report when unchanged, whether it is the
        // node's own file)
        let (base, changed, unchanged, nodes_own) = match configmap {
            Some((source, text)) => (
                text,
                format!("installed from {}", source.display()),
                format!("same as {}", source.display()),
                false,
            ),
            None => match (self.state.record(path), current) {
                // Written by an earlier run and not touched since: start again from what was
                // there before, so that changed runc options of containerd are followed.
                (Some(record), Some(current))
                    if managed_file::sha256_hex(&current) == record.installed_sha256 =>
                {
                    match &record.original {
                        Original::Absent => (
                            node_config_file::default_text(),
                            "written with defaults".to_string(),
                            "defaults, as written before".to_string(),
                            false,
                        ),
                        Original::Backup { path: backup } => {
                            let local = self.host.local(backup);
                            let text = managed_file::read_text_optional(&local)?.ok_or(
                                InstallError::BackupMissing {
                                    path: self.host.local(path),
                                    backup: local,
                                },
                            )?;
                            (
                                text,
                                "the node's config".to_string(),
                                "the node's config, as written before".to_string(),
                                true,
                            )
                        }
                    }
                }
                (_, Some(current)) => (
                    String::from_utf8_lossy(&current).into_owned(),
                    "the node's config".to_string(),
                    "present, left as it is".to_string(),
                    true,
                ),
                (_, None) => (
                    node_config_file::default_text(),
                    "written with defaults".to_string(),
                    String::new(),
                    false,
                ),
            },
        };
        let rendered = match node_config_file::with_runc_options(&base, path, handler) {
            Ok(rendered) => rendered,
            // The node's own file, broken: left for the operator (doctor names the fault), since
            // nixlet has no better file to put there.
            Err(error) if nodes_own => {
                self.report.push(
                    path,
                    Outcome::Kept(format!(
                        "{error}: the runc options of containerd's handler `{}` were not added",
                        handler.name
                    )),
                );
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let copied = if rendered.added.is_empty() {
            String::new()
        } else {
            format!(
                ", with {} from containerd's runc handler `{}`",
                rendered.added.join(", "),
                handler.name
            )
        };
        self.put(
            path,
            rendered.text.as_bytes(),
            FileRole::NodeConfig,
            ConfigEdit::default(),
            &format!("{changed}{copied}"),
            &format!("{unchanged}{copied}"),
        )?;
        if let Some(note) = &handler.note {
            self.report.push(path, Outcome::Note(note.clone()));
        }
        for left_out in &handler.left_out {
            self.report.push(
                path,
                Outcome::Note(format!("runc option left out: {left_out}")),
            );
        }
        Ok(())
    }

    /// Creates the host directory `dir` and its missing parents, recording each.
    fn ensure_dir(&mut self, dir: &Path) -> Result<(), InstallError> {
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|ancestor| !self.host.local(ancestor).exists())
            .collect();
        for ancestor in missing.into_iter().rev() {
            let local = self.host.local(ancestor);
            fs::create_dir(&local).map_err(InstallError::io("create directory", &local))?;
            if !self.state.created_dirs.iter().any(|dir| dir == ancestor) {
                self.state.created_dirs.push(ancestor.to_path_buf());
            }
            self.report
                .push(ancestor, Outcome::Changed("created directory".into()));
        }
        Ok(())
    }

    /// Saves the state when it differs from what was last saved.
    fn checkpoint(&mut self) -> Result<(), InstallError> {
        if self.state == self.recorded {
            return Ok(());
        }
        if let Some(dir) = InstallState::path().parent() {
            self.ensure_dir(dir)?;
        }
        self.state.save(self.host)?;
        self.recorded = self.state.clone();
        Ok(())
    }
}
