//! `nixlet node install`: make a node run the `nixlet` runtime class.
//!
//! Idempotent: every file is compared with what it should be and written only when it differs,
//! so a second run writes nothing, leaves the install state byte for byte as it was and does not
//! restart containerd. Before a file is first replaced its original is recorded (and backed up),
//! and the state is saved before the write, so an interrupted run can still be uninstalled.

use std::fs;
use std::path::{Path, PathBuf};

use crate::containerd_edit::ConfigEdit;
use crate::containerd_plan;
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

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the node's root file system is mounted (`/` on the node itself).
    pub host_root: PathBuf,
    /// Host directory on containerd's `PATH` for the shim and the CLI.
    pub binary_dir: PathBuf,
    /// Directory holding the two binaries to copy: the running `nixlet`'s own.
    pub source_dir: PathBuf,
    /// Node config to install (the DaemonSet's ConfigMap); without it, defaults are written
    /// only when the node has no config.
    pub node_config: Option<PathBuf>,
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
    let writes = containerd_plan::plan(&host)?;

    let state = InstallState::load(&host)?.unwrap_or_default();
    let mut run = Run {
        host: &host,
        recorded: state.clone(),
        state,
        report: Report::default(),
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

    let node_config = Path::new(NODE_CONFIG);
    match node_config_source {
        Some((source, text)) => {
            run.put(
                node_config,
                text.as_bytes(),
                FileRole::NodeConfig,
                ConfigEdit::default(),
                &format!("installed from {}", source.display()),
                &format!("same as {}", source.display()),
            )?;
        }
        None if managed_file::read_optional(&host.local(node_config))?.is_some() => {
            run.report.push(
                node_config,
                Outcome::Unchanged("present, left as it is".into()),
            );
        }
        None => {
            run.put(
                node_config,
                node_config_file::default_text().as_bytes(),
                FileRole::NodeConfig,
                ConfigEdit::default(),
                "written with defaults",
                "",
            )?;
        }
    }
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
