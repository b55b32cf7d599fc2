//! The credentials an `http` source sends: a bearer token read from a file, or the login and
//! password a netrc file gives for the server's host.
//!
//! Both files are read again on every load, so that a rotated token (a Kubernetes Secret
//! volume is updated in place) is picked up without restarting anything.

use std::fs;
use std::path::{Path, PathBuf};

use reqwest::blocking::RequestBuilder;

use crate::source::http::{HttpSourceError, HttpSourceOptions};
use crate::source::netrc::Netrc;

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    None {
        /// Why none: for the message when the server asks for some.
        reason: String,
    },
    Bearer {
        token: String,
        file: PathBuf,
    },
    Basic {
        login: String,
        password: Option<String>,
        netrc: PathBuf,
        host: String,
    },
}

// Written by hand so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Credentials {
    /// Reads the credentials `options` configure for `host`.
    pub(crate) fn load(
        options: &HttpSourceOptions,
        host: &str,
    ) -> Result<Credentials, HttpSourceError> {
        if let Some(file) = &options.token_file {
            return read_token(file);
        }
        let Some(netrc_path) = &options.netrc_file else {
            return Ok(Credentials::None {
                reason: "no credentials (none configured)".to_string(),
            });
        };
        let text = fs::read_to_string(netrc_path).map_err(|source| HttpSourceError::NetrcFile {
            path: netrc_path.clone(),
            source,
        })?;
        let netrc = Netrc::parse(&text).map_err(|source| HttpSourceError::Netrc {
            path: netrc_path.clone(),
            source,
        })?;
        match netrc
            .for_host(host)
            .and_then(|entry| entry.login.clone().map(|l| (l, entry)))
        {
            Some((login, entry)) => Ok(Credentials::Basic {
                login,
                password: entry.password.clone(),
                netrc: netrc_path.clone(),
                host: host.to_string(),
            }),
            None => Ok(Credentials::None {
                reason: format!(
                    "no credentials ({:?} has no login for {host})",
                    netrc_path.display().to_string()
                ),
            }),
        }
    }

    pub(crate) fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Credentials::None { .. } => request,
            Credentials::Bearer { token, .. } => request.bearer_auth(token),
            Credentials::Basic {
                login, password, ..
            } => request.basic_auth(login, password.as_ref()),
        }
    }

    pub(crate) fn is_some(&self) -> bool {
        !matches!(self, Credentials::None { .. })
    }

    /// What was sent, without the secret, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Credentials::None { reason } => reason.clone(),
            Credentials::Bearer { file, .. } => {
                format!("a bearer token from {:?}", file.display().to_string())
            }
            Credentials::Basic {
                login, netrc, host, ..
            } => format!(
                "login {login:?} for {host} from {:?}",
                netrc.display().to_string()
            ),
        }
    }
}

fn read_token(file: &Path) -> Result<Credentials, HttpSourceError> {
    let text = fs::read_to_string(file).map_err(|source| HttpSourceError::TokenFile {
        path: file.to_path_buf(),
        source,
    })?;
    // Files written by `echo` or editors end with a newline that is not part of the token.
    let token = text.trim();
    if token.is_empty() {
        return Err(HttpSourceError::EmptyToken {
            path: file.to_path_buf(),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(HttpSourceError::InvalidToken {
            path: file.to_path_buf(),
        });
    }
    Ok(Credentials::Bearer {
        token: token.to_string(),
        file: file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(token: Option<&Path>, netrc: Option<&Path>) -> HttpSourceOptions {
        HttpSourceOptions {
            token_file: token.map(Path::to_path_buf),
            netrc_file: netrc.map(Path::to_path_buf),
            ..HttpSourceOptions::default()
        }
    }

    #[test]
    fn a_token_file_gives_a_trimmed_bearer_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        fs::write(&file, "abc.def-123\n").unwrap();
        let credentials = Credentials::load(&options(Some(&file), None), "h").unwrap();
        assert_eq!(
            credentials,
            Credentials::Bearer {
                token: "abc.def-123".into(),
                file: file.clone()
            }
        );
        assert_eq!(
            format!("{credentials:?}"),
            format!("a bearer token from {:?}", file.display().to_string())
        );
        assert!(!format!("{credentials:?}").contains("abc"));
    }

    #[test]
    fn bad_token_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let message = |file: &Path| {
            Credentials::load(&options(Some(file), None), "h")
                .unwrap_err()
                .to_string()
        };
        assert!(message(&file).starts_with(&format!(
            "cannot read bearer token file {:?}: ",
            file.display().to_string()
        )));
        fs::write(&file, " \n").unwrap();
        assert_eq!(
            message(&file),
            format!(
                "bearer token file {:?} is empty",
                file.display().to_string()
            )
        );
        fs::write(&file, "two words").unwrap();
        assert_eq!(
            message(&file),
            format!(
                "the bearer token in {:?} contains whitespace or control characters",
                file.display().to_string()
            )
        );
    }

    #[test]
    fn netrc_gives_the_login_for_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("netrc");
        fs::write(&file, "machine envs.example.com login ci password s3cret\n").unwrap();
        let credentials =
            Credentials::load(&options(None, Some(&file)), "envs.example.com").unwrap();
        assert!(credentials.is_some());
        assert_eq!(
            credentials.describe(),
            format!(
                "login \"ci\" for envs.example.com from {:?}",
                file.display().to_string()
            )
        );
        let other = Credentials::load(&options(None, Some(&file)), "other.example.com").unwrap();
        assert!(!other.is_some());
        assert_eq!(
            other.describe(),
            format!(
                "no credentials ({:?} has no login for other.example.com)",
                file.display().to_string()
            )
        );
        fs::write(&file, "machine envs.example.com user ci").unwrap();
        assert_eq!(
            Credentials::load(&options(None, Some(&file)), "h")
                .unwrap_err()
                .to_string(),
            format!(
                "netrc file {:?}: unknown keyword \"user\"",
                file.display().to_string()
            )
        );
    }

    #[test]
    fn without_configuration_nothing_is_sent() {
        let credentials = Credentials::load(&HttpSourceOptions::default(), "h").unwrap();
        assert_eq!(credentials.describe(), "no credentials (none configured)");
    }
}
