//! `nixlet doctor`: checks that a node can run nixlet pods and prints each finding with a fix.
//! Read-only: it writes nothing on the node. The exit status is 1 when something is wrong, so a
//! script or a DaemonSet probe can gate on it.

mod binaries;
mod containerd_config;
mod containerd_process;
mod containerd_version;
mod report;
mod sources;
mod store;
mod substituters;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use nixlet_config::NodeConfig;
use nixlet_installer::HostRoot;

use binaries::SearchPath;
use containerd_process::{ContainerdProcess, DEFAULT_CONTAINERD_CONFIG, DEFAULT_SERVICE_PATH};
use report::Report;

#[derive(Args)]
pub struct DoctorArgs {
    /// Where the node's root file system is mounted (`/host` in the DaemonSet's pod). Every
    /// other path is a path on the node, read below this root.
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// containerd's config file.
    #[arg(long, default_value = DEFAULT_CONTAINERD_CONFIG)]
    containerd_config: PathBuf,
    /// nixlet's node config [default: $NIXLET_CONFIG, else /etc/nixlet/config.toml]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Free space /nix/store must have, in MiB.
    #[arg(long, default_value_t = 1024)]
    min_free_mib: u64,
    /// Limit for each request to a substituter or environment server, in seconds.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let host = HostRoot::new(&args.host_root);
    let config_path = args.config.unwrap_or_else(NodeConfig::path_in_force);
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut report = Report::default();

    let config = load_node_config(&mut report, &host, &config_path);
    let process = containerd_process::find(&host, &args.containerd_config);
    // The release decides how containerd merges the config's imports, so it is learnt first
    // and reported after the process it belongs to.
    let version = containerd_version::find(&host, &args.containerd_config, process.as_ref());
    containerd_config::check(
        &mut report,
        &host,
        &args.containerd_config,
        version.as_ref().ok().map(|found| &found.version),
    );
    let search = search_path(&mut report, &host, process, &args.containerd_config);
    containerd_version::check(&mut report, &host, &args.containerd_config, &version);
    binaries::check(&mut report, &host, &search, &config);
    store::check_store(
        &mut report,
        &host,
        args.min_free_mib.saturating_mul(1 << 20),
    );
    store::check_database(&mut report, &host, &config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        substituters::check(&mut report, &host, &config, timeout).await;
        sources::check(&mut report, &host, &config, timeout).await;
    });

    println!(
        "nixlet doctor: node root {}, containerd config {}, node config {}",
        args.host_root.display(),
        args.containerd_config.display(),
        config_path.display()
    );
    print!("{report}");
    std::io::stdout().flush().context("write the report")?;
    if !report.healthy() {
        // Not an error of the command: the report said what is wrong.
        std::process::exit(1);
    }
    Ok(())
}

/// The node config as the shim will read it; defaults (and a problem) when it does not parse,
/// so that the other checks still run.
fn load_node_config(report: &mut Report, host: &HostRoot, path: &std::path::Path) -> NodeConfig {
    const CHECK: &str = "node config";
    let text = match std::fs::read_to_string(host.local(path)) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            report.ok(
                CHECK,
                format!("no file at {}: the defaults apply", path.display()),
            );
            return NodeConfig::default();
        }
        Err(error) => {
            report.fail(
                CHECK,
                format!("{} is not readable: {error}", path.display()),
                "make it readable by root; the checks below use the defaults",
            );
            return NodeConfig::default();
        }
    };
    // Parsed under its host path, so that messages name the file as the shim sees it.
    match NodeConfig::parse(&text, path) {
        Ok(config) => {
            report.ok(CHECK, format!("{} parses", path.display()));
            config
        }
        Err(error) => {
            report.fail(
                CHECK,
                error.to_string(),
                "correct the file (keys are checked strictly; see the README's node config \
                 section); the checks below use the defaults",
            );
            NodeConfig::default()
        }
    }
}

/// The `PATH` containerd (and so every shim) runs with.
fn search_path(
    report: &mut Report,
    host: &HostRoot,
    process: Option<ContainerdProcess>,
    containerd_config: &std::path::Path,
) -> SearchPath {
    const CHECK: &str = "containerd process";
    match process {
        Some(process) => {
            let described = format!("the PATH of containerd (pid {})", process.pid);
            let exe_dir = process.exe_dir();
            match process.path {
                Some(path) => {
                    report.ok(CHECK, format!("pid {} runs with PATH={path}", process.pid));
                    SearchPath {
                        path,
                        exe_dir,
                        described,
                    }
                }
                None => {
                    report.warn(
                        CHECK,
                        format!(
                            "pid {} has no PATH in its environment (or it is not readable): \
                             its shims find only what is next to containerd",
                            process.pid
                        ),
                        "set Environment=PATH=… in containerd's systemd unit, or run doctor \
                         as root to read /proc/PID/environ",
                    );
                    SearchPath {
                        path: String::new(),
                        exe_dir,
                        described,
                    }
                }
            }
        }
        None => {
            report.warn(
                CHECK,
                format!(
                    "no running containerd reads {}: checking programs against systemd's \
                     default PATH ({DEFAULT_SERVICE_PATH})",
                    containerd_config.display()
                ),
                "start containerd (`systemctl start containerd`) and run doctor again to check \
                 its real PATH",
            );
            let exe_dir = binaries::look_path(host, DEFAULT_SERVICE_PATH, "containerd")
                .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf));
            SearchPath {
                path: DEFAULT_SERVICE_PATH.to_string(),
                exe_dir,
                described: "the default service PATH".to_string(),
            }
        }
    }
}
