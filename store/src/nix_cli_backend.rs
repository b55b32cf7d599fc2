//! The Nix CLI as a substituter backend: for caches nixlet's own client cannot read (`s3://`,
//! `ssh://`, …, or a `file://` cache a node prefers Nix to read), nixlet runs `nix-store --realise` against that one cache, with the
//! node's trusted keys, under a timeout. With `build_flakes = true` the same substituter also
//! builds flake packages no cache has (`flake_build.rs`), with the same options and rules.
//!
//! Nix is started in a process group of its own, and on expiry (or when the caller gives up on
//! the fetch) the whole group is killed with SIGKILL, not just `nix-store`: helpers it started
//! (an `ssh` for `ssh://` stores, a post-build hook) would otherwise outlive it and keep
//! writing. Nix then recovers its own half-done work under its own locks, as after any crash.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nixlet_manifest::StorePath;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;

use crate::fetch_error::FetchError;
use crate::signature::TrustedKey;
use crate::substituter::SubstituterConfig;

pub const DEFAULT_NIX_CLI_TIMEOUT: Duration = Duration::from_secs(600);

/// What Nix printed last on failure: enough for the cause, bounded for a log line.
const STDERR_TAIL: usize = 2048;

/// One cache read through the Nix CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixCliSubstituter {
    pub url: String,
    pub trusted_keys: Vec<String>,
    pub priority: Option<u32>,
    pub netrc_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Whether flake packages whose outputs no cache has may be built on the node with
    /// `nix build`, using this cache for their dependencies.
    pub build_flakes: bool,
    /// `nix-store`, looked up on PATH unless absolute.
    pub program: PathBuf,
    /// `nix` (for `nix build`), looked up on PATH unless absolute.
    pub nix_program: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NixCliError {
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {}s; its process group was killed", timeout.as_secs_f64())]
    TimedOut {
        command: &'static str,
        timeout: Duration,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    #[error("waiting for `{command}` failed: {source}")]
    Wait {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The command lines in messages.
pub(crate) const REALISE: &str = "nix-store --realise";
pub(crate) const BUILD: &str = "nix build";

impl NixCliSubstituter {
    pub fn new(config: &SubstituterConfig) -> Result<NixCliSubstituter, FetchError> {
        let invalid = |problem: String| FetchError::InvalidSubstituter {
            url: config.url.clone(),
            problem,
        };
        if config.url.trim().is_empty() || config.url.chars().any(char::is_whitespace) {
            return Err(invalid(
                "the url must be one nix store url without spaces".into(),
            ));
        }
        for key in &config.trusted_keys {
            TrustedKey::parse(key).map_err(|e| invalid(e.to_string()))?;
        }
        if config.token_file.is_some() {
            return Err(invalid(
                "token_file is not supported with backend \"nix-cli\" (nix reads credentials \
                 from a netrc file: use netrc_file)"
                    .into(),
            ));
        }
        if config.timeout_secs == Some(0) {
            return Err(invalid("timeout_secs must be at least 1".into()));
        }
        Ok(NixCliSubstituter {
            url: config.url.clone(),
            trusted_keys: config.trusted_keys.clone(),
            priority: config.priority,
            netrc_file: config.netrc_file.clone(),
            timeout: config
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_NIX_CLI_TIMEOUT),
            build_flakes: config.build_flakes,
            program: PathBuf::from("nix-store"),
            nix_program: PathBuf::from("nix"),
        })
    }

    /// The arguments of `nix-store`: only this cache (not the ones in nix.conf), only these
    /// keys, and no remembered "not in the cache" answers (Nix keeps those for an hour, which
    /// would hide a path pushed to the cache since).
    pub fn arguments(&self, roots: &[StorePath], require_signatures: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--realise".into()];
        args.extend(roots.iter().map(|r| OsString::from(r.to_string())));
        args.extend(self.options(require_signatures));
        args
    }

    /// The `--option`s every command gets, `nix-store --realise` and `nix build` alike.
    pub(crate) fn options(&self, require_signatures: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |name: &str, value: OsString| {
            args.push("--option".into());
            args.push(name.into());
            args.push(value);
        };
        option("substituters", self.url.clone().into());
        option("trusted-public-keys", self.trusted_keys.join(" ").into());
        option(
            "require-sigs",
            if require_signatures { "true" } else { "false" }.into(),
        );
        option("narinfo-cache-negative-ttl", "0".into());
        if let Some(netrc) = &self.netrc_file {
            option("netrc-file", netrc.clone().into());
        }
        args
    }

    /// Runs `nix-store --realise` for `roots`; the whole process group dies on the timeout or
    /// when this future is dropped.
    pub async fn realise(
        &self,
        roots: &[StorePath],
        require_signatures: bool,
    ) -> Result<(), NixCliError> {
        tracing::info!(substituter = %self.url, roots = roots.len(), "running nix-store --realise");
        self.run(
            &self.program,
            self.arguments(roots, require_signatures),
            REALISE,
        )
        .await
        .map(drop)
    }

    /// Runs `program` with `args` in a process group of its own under this substituter's
    /// timeout; returns its stdout. `command` names it in messages.
    pub(crate) async fn run(
        &self,
        program: &Path,
        args: Vec<OsString>,
        command: &'static str,
    ) -> Result<Vec<u8>, NixCliError> {
        let started = Instant::now();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NixCliError::Spawn {
                program: program.to_path_buf(),
                source,
            })?;
        let mut group = ProcessGroup {
            pgid: child.id().and_then(|id| Pid::from_raw(id as i32)),
            leader_alive: true,
        };
        tracing::debug!(substituter = %self.url, command, pgid = ?group.pgid.map(|p| p.as_raw_nonzero()), timeout_s = self.timeout.as_secs(), "started");
        // Both pipes are drained while the command runs: a full pipe would block it.
        let (stdout, stderr) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                group.leader_alive = false;
                group.kill();
                let stderr = stderr.await.unwrap_or_default();
                let stdout = stdout.await.unwrap_or_default();
                tracing::info!(substituter = %self.url, command, %status, elapsed_ms = started.elapsed().as_millis() as u64, "finished");
                if status.success() {
                    Ok(stdout)
                } else {
                    Err(NixCliError::Failed {
                        command,
                        status,
                        stderr: last_lines(&stderr),
                    })
                }
            }
            Ok(Err(source)) => Err(NixCliError::Wait { command, source }),
            Err(_) => {
                tracing::warn!(substituter = %self.url, command, timeout_s = self.timeout.as_secs(), "timed out; killing its process group");
                group.kill();
                let _ = child.wait().await;
                group.leader_alive = false;
                group.wait_gone(Duration::from_secs(5)).await;
                Err(NixCliError::TimedOut {
                    command,
                    timeout: self.timeout,
                })
            }
        }
    }
}

/// Reads a child's pipe to its end on a task of its own.
fn read_all<R>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        bytes
    })
}

/// The process group of one Nix command, killed when dropped.
struct ProcessGroup {
    pgid: Option<Pid>,
    /// Until the leader is reaped its descendants can be found (`process_tree.rs`), builders
    /// that left the group included.
    leader_alive: bool,
}

impl ProcessGroup {
    fn kill(&self) {
        let Some(pgid) = self.pgid else { return };
        if self.leader_alive {
            crate::process_tree::kill_tree(pgid);
        } else {
            // ESRCH: nothing left in the group, which is the usual case after a clean exit.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
    }

    /// Waits until no process of the group remains (orphans are reaped by init).
    async fn wait_gone(&self, limit: Duration) {
        let Some(pgid) = self.pgid else { return };
        let deadline = Instant::now() + limit;
        while rustix::process::test_kill_process_group(pgid).is_ok() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    pgid = pgid.as_raw_nonzero(),
                    "processes of the nix command's group are still there after SIGKILL"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].lines().collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::substituter::SubstituterBackend;

    const KEY: &str = "cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

    fn config(url: &str) -> SubstituterConfig {
        SubstituterConfig {
            url: url.into(),
            trusted_keys: vec![KEY.into()],
            backend: SubstituterBackend::NixCli,
            ..SubstituterConfig::default()
        }
    }

    #[test]
    fn nix_store_gets_only_this_cache_and_these_keys() {
        let mut with_netrc = config("file:///srv/cache");
        with_netrc.netrc_file = Some("/etc/nixlet/netrc".into());
        let cli = NixCliSubstituter::new(&with_netrc).unwrap();
        assert_eq!(cli.timeout, DEFAULT_NIX_CLI_TIMEOUT);
        let root =
            StorePath::parse("/nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12").unwrap();
        let args: Vec<String> = cli
            .arguments(&[root], true)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args.join(" "),
            format!(
                "--realise /nix/store/0a1b2c3d4f5g6h7i8j9k0l1m2n3p4q5r-hello-2.12 \
                 --option substituters file:///srv/cache --option trusted-public-keys {KEY} \
                 --option require-sigs true --option narinfo-cache-negative-ttl 0 \
                 --option netrc-file /etc/nixlet/netrc"
            )
        );
    }

    #[test]
    fn bad_configs_name_the_url() {
        let mut token = config("s3://bucket");
        token.token_file = Some("/t".into());
        assert!(NixCliSubstituter::new(&token)
            .unwrap_err()
            .to_string()
            .starts_with("invalid substituter \"s3://bucket\": token_file is not supported"));
        let mut zero = config("s3://bucket");
        zero.timeout_secs = Some(0);
        assert_eq!(
            NixCliSubstituter::new(&zero).unwrap_err().to_string(),
            "invalid substituter \"s3://bucket\": timeout_secs must be at least 1"
        );
        assert!(NixCliSubstituter::new(&config("file:///a b")).is_err());
    }

    #[test]
    fn stderr_is_cut_to_its_last_lines() {
        assert_eq!(last_lines(b"one\ntwo\n"), "one; two");
        let long = "x".repeat(5000);
        assert_eq!(last_lines(long.as_bytes()).len(), STDERR_TAIL);
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for nix-store that starts a child and hangs; both must die.
        let script = dir.path().join("fake-nix-store");
        let marker = dir.path().join("child-pid");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nsleep 300 &\necho $! > {}\nwait\n",
                marker.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cli = NixCliSubstituter::new(&config("file:///srv/cache")).unwrap();
        cli.program = script;
        cli.timeout = Duration::from_millis(500);
        let started = Instant::now();
        let error = cli.realise(&[], true).await.unwrap_err();
        assert!(matches!(error, NixCliError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z ")),
            "the child {child} survived"
        );
    }
}
