//! Restarting containerd so it reads its new config. Behind a trait so that tests record the
//! request instead of restarting anything.

use std::process::Command;

use crate::host_root::HostRoot;

pub trait ContainerdRestarter {
    fn restart(&self) -> Result<(), RestartError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("restart command is empty")]
    Empty,
    #[error("restart containerd with `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("restart containerd with `{command}`: {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs a command line (split on whitespace; no shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRestarter {
    argv: Vec<String>,
}

impl CommandRestarter {
    pub fn new(argv: Vec<String>) -> Result<CommandRestarter, RestartError> {
        if argv.is_empty() {
            return Err(RestartError::Empty);
        }
        Ok(CommandRestarter { argv })
    }

    pub fn parse(command_line: &str) -> Result<CommandRestarter, RestartError> {
        Self::new(command_line.split_whitespace().map(String::from).collect())
    }

    /// `systemctl restart containerd` on the node itself; from a pod (host root elsewhere), the
    /// same in the namespaces of the host's PID 1, which the pod sees with `hostPID: true`:
    /// its mount namespace, so the host's systemctl talks to the host's systemd.
    pub fn for_host_root(host: &HostRoot) -> CommandRestarter {
        let systemctl = ["systemctl", "restart", "containerd"];
        let argv: Vec<&str> = if host.is_slash() {
            systemctl.to_vec()
        } else {
            ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"]
                .into_iter()
                .chain(systemctl)
                .collect()
        };
        CommandRestarter {
            argv: argv.into_iter().map(String::from).collect(),
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }
}

impl ContainerdRestarter for CommandRestarter {
    fn restart(&self) -> Result<(), RestartError> {
        let command = self.argv.join(" ");
        tracing::info!(command = %command, "restarting containerd");
        let output = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .output()
            .map_err(|source| RestartError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(RestartError::Failed {
                command,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_a_pod_the_restart_enters_the_hosts_namespaces() {
        assert_eq!(
            CommandRestarter::for_host_root(&HostRoot::new("/host")).argv(),
            [
                "nsenter",
                "-t",
                "1",
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "--",
                "systemctl",
                "restart",
                "containerd"
            ]
        );
        assert_eq!(
            CommandRestarter::for_host_root(&HostRoot::new("/")).argv(),
            ["systemctl", "restart", "containerd"]
        );
    }

    #[test]
    fn a_failing_command_reports_its_status_and_stderr() {
        let restarter = CommandRestarter::new(vec![
            "sh".into(),
            "-c".into(),
            "echo no such unit >&2; exit 5".into(),
        ])
        .unwrap();
        let error = restarter.restart().unwrap_err().to_string();
        assert!(error.contains("exit status: 5: no such unit"), "{error}");
    }

    #[test]
    fn an_empty_command_is_refused() {
        assert!(matches!(
            CommandRestarter::parse("  "),
            Err(RestartError::Empty)
        ));
    }
}
