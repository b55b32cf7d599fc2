//! `nixlet node uninstall`: undo exactly what install recorded, newest first.
//!
//! A file still exactly as install left it gets its original back byte for byte (or is removed
//! when there was none). One changed since is handled by whose it is: nixlet's own files
//! (binaries, the drop-in) are restored all the same; an operator's containerd config gets only
//! nixlet's edits reverted, keeping everything else that changed, with the backup left for
//! comparison; a node config changed since is left in place.

use std::path::Path;

use crate::containerd_edit;
use crate::containerd_schema;
use crate::error::InstallError;
use crate::host_root::HostRoot;
use crate::install_state::{FileRecord, FileRole, InstallState, Original};
use crate::managed_file;
use crate::names::STATE_FILE;
use crate::report::{Outcome, Report, RestartOutcome};
use crate::restart::ContainerdRestarter;

pub fn uninstall(
    host_root: &Path,
    restarter: Option<&dyn ContainerdRestarter>,
) -> Result<Report, InstallError> {
    let host = HostRoot::new(host_root);
    let mut report = Report::default();
    let Some(mut state) = InstallState::load(&host)? else {
        report.push(
            STATE_FILE,
            Outcome::Unchanged("no install state: nixlet is not installed on this node".into()),
        );
        return Ok(report);
    };
    while let Some(record) = state.files.last().cloned() {
        let changed = undo(&host, &record, &mut report)?;
        state.files.pop();
        state.restart_pending |= changed
            && matches!(
                record.role,
                FileRole::ContainerdConfig | FileRole::ContainerdDropIn
            );
        // Progress is durable: a rerun after a failure continues with what is left.
        state.save(&host)?;
    }
    if state.restart_pending {
        report.restart = match restarter {
            Some(restarter) => {
                restarter.restart()?;
                RestartOutcome::Restarted
            }
            None => RestartOutcome::Skipped,
        };
    }
    InstallState::remove(&host)?;
    report.push(STATE_FILE, Outcome::Changed("removed".into()));
    for dir in state.created_dirs.iter().rev() {
        let local = host.local(dir);
        match std::fs::remove_dir(&local) {
            Ok(()) => report.push(dir, Outcome::Changed("removed directory".into())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) if error.kind() == std::io::ErrorKind::DirectoryNotEmpty => report.push(
                dir,
                Outcome::Kept("directory install created is not empty: left in place".into()),
            ),
            Err(source) => return Err(InstallError::io("remove directory", local)(source)),
        }
    }
    Ok(report)
}

/// Undoes one file; true when it wrote or removed something.
fn undo(host: &HostRoot, record: &FileRecord, report: &mut Report) -> Result<bool, InstallError> {
    let local = host.local(&record.path);
    let current = managed_file::read_optional(&local)?;
    let untouched = current
        .as_deref()
        .is_some_and(|bytes| managed_file::sha256_hex(bytes) == record.installed_sha256);
    let since = if untouched || current.is_none() {
        ""
    } else {
        " (it had changed since install)"
    };
    match record.role {
        _ if untouched => {}
        FileRole::Binary | FileRole::ContainerdDropIn => {}
        FileRole::ContainerdConfig if current.is_some() => {
            let text = String::from_utf8_lossy(current.as_deref().unwrap_or_default());
            let mut doc = containerd_schema::parse(&text, &record.path)?;
            if let Some(edit) = &record.config_edit {
                containerd_edit::revert(&mut doc, edit, &record.path)?;
            }
            let reverted = doc.to_string();
            if reverted == text {
                report.push(
                    &record.path,
                    Outcome::Kept("changed since install and holds none of nixlet's edits".into()),
                );
                return Ok(false);
            }
            let mode = managed_file::mode_of(&local).unwrap_or(0o644);
            managed_file::write_atomic(&local, reverted.as_bytes(), mode)?;
            let backup = match &record.original {
                Original::Backup { path } => {
                    format!("; the original is still in {}", path.display())
                }
                Original::Absent => String::new(),
            };
            report.push(
                &record.path,
                Outcome::Changed(format!(
                    "changed since install: reverted only nixlet's edits, kept the rest{backup}"
                )),
            );
            return Ok(true);
        }
        FileRole::NodeConfig if current.is_some() => {
            report.push(
                &record.path,
                Outcome::Kept("changed since install: left in place".into()),
            );
            return Ok(false);
        }
        // Removed by someone since: restore the original if there was one.
        FileRole::ContainerdConfig | FileRole::NodeConfig => {}
    }
    let what = match &record.original {
        Original::Absent if current.is_none() => {
            report.push(&record.path, Outcome::Unchanged("already gone".into()));
            return Ok(false);
        }
        Original::Absent => {
            managed_file::remove(&local)?;
            format!("removed{since}")
        }
        Original::Backup { path: backup } => {
            let local_backup = host.local(backup);
            if managed_file::read_optional(&local_backup)?.is_none() {
                return Err(InstallError::BackupMissing {
                    path: local,
                    backup: local_backup,
                });
            }
            managed_file::restore(&local_backup, &local)?;
            format!("restored the original from {}{since}", backup.display())
        }
    };
    report.push(&record.path, Outcome::Changed(what));
    Ok(true)
}
