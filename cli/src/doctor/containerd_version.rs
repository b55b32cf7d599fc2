//! Which containerd runs on the node and whether nixlet works with it: its release (asked on its
//! API socket as `nixlet node install` asks it, else reported by its binary), the bootstrap
//! protocol it starts nixlet's shim with, and whether it reads the schema its config declares.

use std::path::{Path, PathBuf};

use nixlet_installer::containerd_probe::{self, DEFAULT_ADDRESS, DEFAULT_TIMEOUT};
use nixlet_installer::containerd_schema::{self, Detected};
use nixlet_installer::containerd_version::OLDEST_SUPPORTED;
use nixlet_installer::{managed_file, ContainerdVersion, HostRoot};

use super::binaries;
use super::containerd_process::{ContainerdProcess, DEFAULT_SERVICE_PATH};
use super::report::Report;

const CHECK: &str = "containerd version";

/// The release and how doctor learnt it.
#[derive(Debug, Clone)]
pub struct Found {
    pub version: ContainerdVersion,
    pub how: String,
}

/// The release of the containerd reading `config`: its daemon's answer on the socket its
/// command line or config names; else what its binary (the running process's, or the one on
/// systemd's default `PATH` when none runs) reports. `Err` says why neither worked.
pub fn find(
    host: &HostRoot,
    config: &Path,
    process: Option<&ContainerdProcess>,
) -> Result<Found, String> {
    let address = process
        .and_then(|process| process.address.clone())
        .or_else(|| configured_address(host, config))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADDRESS));
    let socket = host.local(&address);
    let asked = if socket.exists() {
        match containerd_probe::ask(&socket, DEFAULT_TIMEOUT) {
            Ok(version) => {
                return Ok(Found {
                    version,
                    how: format!("answered at {}", address.display()),
                })
            }
            Err(error) => format!("{error}"),
        }
    } else {
        format!("no socket at {}", address.display())
    };
    let binary = match process {
        Some(process) => process.exe.clone(),
        None => binaries::look_path(host, DEFAULT_SERVICE_PATH, "containerd"),
    };
    let Some(binary) = binary else {
        return Err(format!("{asked}, and no containerd binary was found"));
    };
    match containerd_probe::binary_version(&host.local(&binary)) {
        Ok(version) => Ok(Found {
            version,
            how: match process {
                Some(_) => format!("its binary {} says so; {asked}", binary.display()),
                None => format!("not running; its binary {} says so", binary.display()),
            },
        }),
        Err(error) => Err(format!("{asked}; {error}")),
    }
}

fn configured_address(host: &HostRoot, config: &Path) -> Option<PathBuf> {
    let text = managed_file::read_text_optional(&host.local(config)).ok()??;
    let doc = containerd_schema::parse(&text, config).ok()?;
    containerd_probe::address_in_config(&doc).map(PathBuf::from)
}

pub fn check(report: &mut Report, host: &HostRoot, config: &Path, found: &Result<Found, String>) {
    let found = match found {
        Ok(found) => found,
        Err(why) => {
            report.warn(
                CHECK,
                format!("unknown: {why}"),
                "start containerd (`systemctl start containerd`) and run doctor again; from a \
                 pod, mount the host's /run/containerd",
            );
            return;
        }
    };
    let version = &found.version;
    if let Err(error) = version.check_supported() {
        report.fail(
            CHECK,
            format!("{error} ({})", found.how),
            format!(
                "upgrade containerd to {}.{} or later (1.7 or 2.x: upstream no longer supports \
                 1.6)",
                OLDEST_SUPPORTED.0, OLDEST_SUPPORTED.1
            ),
        );
        return;
    }
    let running = format!(
        "{version} ({}): it starts nixlet's shim with {}",
        found.how,
        version.bootstrap()
    );
    let text = match managed_file::read_text_optional(&host.local(config)) {
        Ok(Some(text)) => text,
        Ok(None) => {
            report.ok(
                CHECK,
                format!(
                    "{running}; no config at {}: its defaults apply",
                    config.display()
                ),
            );
            return;
        }
        Err(error) => {
            report.ok(CHECK, format!("{running}; {error}"));
            return;
        }
    };
    // A file that does not parse is the containerd config check's finding.
    let detected = containerd_schema::parse(&text, config)
        .ok()
        .and_then(|doc| containerd_schema::detect(&doc, config).ok());
    let newest = version.newest_schema().version();
    match detected {
        Some(Detected::Schema(schema)) if !version.reads(schema) => report.fail(
            CHECK,
            format!(
                "{running}; it cannot read {}, which declares version {} (that needs \
                 containerd {} or later; {} reads up to version {newest}), so it does not start",
                config.display(),
                schema.version(),
                schema.first_reader(),
                version.line()
            ),
            format!(
                "write the file for schema {newest} (`containerd config default` of this \
                 containerd shows one), or upgrade containerd"
            ),
        ),
        Some(Detected::Schema(schema)) if !version.reads_natively(schema) => report.ok(
            CHECK,
            format!(
                "{running}; {} is schema {}, which it migrates to {newest} at every start",
                config.display(),
                schema.version()
            ),
        ),
        Some(Detected::Schema(schema)) => report.ok(
            CHECK,
            format!(
                "{running}; {} is schema {}",
                config.display(),
                schema.version()
            ),
        ),
        Some(Detected::Blank) => report.ok(
            CHECK,
            format!(
                "{running}; {} has no settings: its defaults apply",
                config.display()
            ),
        ),
        None => report.ok(
            CHECK,
            format!(
                "{running}; the schema of {} is not known (see the containerd config check)",
                config.display()
            ),
        ),
    }
}
