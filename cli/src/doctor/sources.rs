//! The environment sources of the node config: a `dir` root must be a readable directory, an
//! `http` source must answer with the configured credentials. Without a source no pod can name
//! an environment.

use std::path::Path;
use std::time::Duration;

use nixlet_config::{NodeConfig, SourceConfig};
use nixlet_installer::HostRoot;
use nixlet_manifest::Netrc;

use super::report::Report;

const CHECK: &str = "environment source";

pub async fn check(report: &mut Report, host: &HostRoot, config: &NodeConfig, timeout: Duration) {
    if config.sources.is_empty() {
        report.warn(
            CHECK,
            "none configured: every pod that names an environment is refused",
            "add a [[sources]] table to the node config (kind = \"dir\" with a root such as \
             /var/lib/nixlet/environments, or kind = \"http\" with a url)",
        );
        return;
    }
    for source in &config.sources {
        match source {
            SourceConfig::Dir { root } => check_dir(report, host, root),
            SourceConfig::Http {
                url,
                token_file,
                netrc_file,
                ..
            } => {
                check_http(
                    report,
                    host,
                    url,
                    token_file.as_deref(),
                    netrc_file.as_deref(),
                    timeout,
                )
                .await
            }
        }
    }
}

fn check_dir(report: &mut Report, host: &HostRoot, root: &Path) {
    let shown = root.display();
    match std::fs::read_dir(host.local(root)) {
        Ok(owners) => {
            // owner/name directories: what `nixlet.dev/environment: owner/name` can name.
            let environments: usize = owners
                .filter_map(Result::ok)
                .filter(|owner| owner.path().is_dir())
                .filter_map(|owner| std::fs::read_dir(owner.path()).ok())
                .map(|names| {
                    names
                        .filter_map(Result::ok)
                        .filter(|n| n.path().is_dir())
                        .count()
                })
                .sum();
            if environments == 0 {
                report.warn(
                    CHECK,
                    format!("dir {shown} is readable but holds no environment (owner/name/N/manifest.toml)"),
                    format!("publish one: {shown}/OWNER/NAME/1/manifest.toml (and manifest.lock)"),
                );
            } else {
                report.ok(
                    CHECK,
                    format!("dir {shown} is readable: {environments} environments"),
                );
            }
        }
        Err(error) => report.fail(
            CHECK,
            format!("dir {shown} is not readable: {error}"),
            format!(
                "create it (`mkdir -p {shown}`) and publish environments below it, or fix the \
                 root in the node config"
            ),
        ),
    }
}

async fn check_http(
    report: &mut Report,
    host: &HostRoot,
    url: &str,
    token_file: Option<&Path>,
    netrc_file: Option<&Path>,
    timeout: Duration,
) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(error) => {
            report.fail(
                CHECK,
                format!("http {url}: {error}"),
                "report this as a bug",
            );
            return;
        }
    };
    let mut request = client.get(url);
    if let Some(file) = token_file {
        match std::fs::read_to_string(host.local(file)) {
            Ok(token) => request = request.bearer_auth(token.trim()),
            Err(error) => {
                report.fail(
                    CHECK,
                    format!(
                        "http {url}: token file {} is not readable: {error}",
                        file.display()
                    ),
                    "write the bearer token into that file (mode 0600), or fix token_file",
                );
                return;
            }
        }
    }
    if let Some(file) = netrc_file {
        let text = std::fs::read_to_string(host.local(file)).map_err(|e| e.to_string());
        let netrc = text.and_then(|text| Netrc::parse(&text).map_err(|e| e.to_string()));
        let host_name = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        match netrc {
            Ok(netrc) => {
                if let Some(entry) = netrc.for_host(&host_name) {
                    if let Some(login) = &entry.login {
                        request = request.basic_auth(login, entry.password.as_ref());
                    }
                }
            }
            Err(error) => {
                report.fail(
                    CHECK,
                    format!("http {url}: netrc file {}: {error}", file.display()),
                    "fix the netrc file (machine HOST login USER password SECRET), or netrc_file",
                );
                return;
            }
        }
    }
    match request.send().await {
        Ok(response) if matches!(response.status().as_u16(), 401 | 403) => report.fail(
            CHECK,
            format!(
                "http {url} refuses nixlet's credentials (http {})",
                response.status().as_u16()
            ),
            "check the token_file or netrc_file of this source",
        ),
        Ok(response) if response.status().is_server_error() => report.fail(
            CHECK,
            format!("http {url} answered http {}", response.status().as_u16()),
            "check the environment server",
        ),
        // Any other answer, 404 included: the base URL itself need not be a document.
        Ok(response) => report.ok(
            CHECK,
            format!("http {url} answers (http {})", response.status().as_u16()),
        ),
        Err(error) => report.fail(
            CHECK,
            format!("http {url} does not answer: {}", error_chain(&error)),
            "check the url in [[sources]] and that the server is reachable from this node",
        ),
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
