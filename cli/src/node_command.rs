//! `nixlet node …`: put nixlet on a node and take it off again. The DaemonSet's init container
//! runs `install` against the host mounted at `/host`; an operator can run either on a node
//! itself with `--host-root /`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use nixlet_installer::names::DEFAULT_BINARY_DIR;
use nixlet_installer::{
    CommandRestarter, ContainerdRestarter, ContainerdVersion, HostRoot, InstallOptions,
    RunningContainerd,
};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Copy the shim and CLI onto the host, add the `nixlet` runtime to containerd's config,
    /// write the node config, restart containerd if its config changed. Idempotent.
    Install(InstallArgs),
    /// Undo exactly what `node install` recorded in /var/lib/nixlet/install-state.json.
    Uninstall(UninstallArgs),
    /// The DaemonSet's main process: label the node ready, copy environments from the
    /// ConfigMap, sweep stale GC roots, on an interval.
    Run(crate::node_run::RunArgs),
}

#[derive(Args)]
pub struct InstallArgs {
    /// Where the node's root file system is mounted (`/` when run on the node itself).
    #[arg(long)]
    host_root: PathBuf,
    /// Host directory, on containerd's PATH, for `containerd-shim-nixlet-v2` and `nixlet`.
    #[arg(long, default_value = DEFAULT_BINARY_DIR)]
    binary_dir: PathBuf,
    /// Node config to install as /etc/nixlet/config.toml (the DaemonSet's ConfigMap); without
    /// it, a node without a config gets the defaults and an existing one is left alone.
    #[arg(long)]
    node_config: Option<PathBuf>,
    /// containerd's API socket (a host path), asked for the running release, which decides
    /// the config schema [default: the address in containerd's config, else
    /// /run/containerd/containerd.sock]
    #[arg(long, value_name = "SOCKET", conflicts_with = "containerd_version")]
    containerd_address: Option<PathBuf>,
    /// The containerd release that will read the config (e.g. 2.1.9), instead of asking the
    /// running one: for a node whose containerd does not run, such as an image being built.
    #[arg(long, value_name = "VERSION", value_parser = parse_containerd_version)]
    containerd_version: Option<ContainerdVersion>,
    #[command(flatten)]
    restart: RestartArgs,
}

fn parse_containerd_version(text: &str) -> Result<ContainerdVersion, String> {
    ContainerdVersion::parse(text).map_err(|error| error.to_string())
}

#[derive(Args)]
pub struct UninstallArgs {
    /// Where the node's root file system is mounted (`/` when run on the node itself).
    #[arg(long)]
    host_root: PathBuf,
    #[command(flatten)]
    restart: RestartArgs,
}

#[derive(Args)]
struct RestartArgs {
    /// Do not restart containerd; it reads a changed config only when restarted.
    #[arg(long, conflicts_with = "restart_command")]
    no_restart: bool,
    /// Command that restarts containerd, split on whitespace [default: `systemctl restart
    /// containerd`, in the host's namespaces via `nsenter -t 1` unless --host-root is /]
    #[arg(long, value_name = "COMMAND")]
    restart_command: Option<String>,
}

impl RestartArgs {
    fn restarter(&self, host_root: &std::path::Path) -> Result<Option<CommandRestarter>> {
        if self.no_restart {
            return Ok(None);
        }
        Ok(Some(match &self.restart_command {
            Some(command) => CommandRestarter::parse(command)?,
            None => CommandRestarter::for_host_root(&HostRoot::new(host_root)),
        }))
    }
}

impl NodeCommand {
    pub fn run(self) -> Result<()> {
        let report = match self {
            NodeCommand::Run(args) => return args.run(),
            NodeCommand::Install(args) => {
                // The binaries to install are the ones this `nixlet` came with.
                let exe = std::env::current_exe().context("locate the running nixlet")?;
                let source_dir = exe
                    .parent()
                    .with_context(|| format!("directory of {}", exe.display()))?
                    .to_path_buf();
                let restarter = args.restart.restarter(&args.host_root)?;
                let options = InstallOptions {
                    host_root: args.host_root,
                    binary_dir: args.binary_dir,
                    source_dir,
                    node_config: args.node_config,
                    containerd: match args.containerd_version {
                        Some(version) => RunningContainerd::Given(version),
                        None => RunningContainerd::Ask {
                            address: args.containerd_address,
                        },
                    },
                };
                nixlet_installer::install(
                    &options,
                    restarter.as_ref().map(|r| r as &dyn ContainerdRestarter),
                )
                .context("nixlet node install")?
            }
            NodeCommand::Uninstall(args) => {
                let restarter = args.restart.restarter(&args.host_root)?;
                let report = nixlet_installer::uninstall(
                    &args.host_root,
                    restarter.as_ref().map(|r| r as &dyn ContainerdRestarter),
                )
                .context("nixlet node uninstall")?;
                if let (Some(cluster), Ok(node)) = (
                    crate::node_label::InCluster::detect(),
                    std::env::var("NODE_NAME"),
                ) {
                    crate::node_label::set_ready(&cluster, &node, false)
                        .with_context(|| format!("remove the ready label of node {node}"))?;
                }
                report
            }
        };
        print!("{report}");
        Ok(())
    }
}
