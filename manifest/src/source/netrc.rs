//! `.netrc` files: `machine HOST login USER password SECRET`, as curl and Nix read them.
//!
//! Tokens are separated by any whitespace; a token may be double-quoted (with `\` escaping
//! the next character) to hold spaces. `default` applies to hosts no `machine` names,
//! `account` is read and unused, and a `macdef` runs until the next empty line and is
//! skipped. Lines starting with `#` are comments.

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Netrc {
    /// In file order; the first entry naming a host is the one used, as curl does.
    pub entries: Vec<NetrcEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetrcEntry {
    /// `None` for the `default` entry.
    pub machine: Option<String>,
    pub login: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetrcError {
    #[error("{0:?} has no value")]
    MissingValue(String),
    #[error("{0:?} comes before any \"machine\" or \"default\"")]
    OutsideEntry(String),
    #[error("unknown keyword {0:?}")]
    UnknownKeyword(String),
    #[error("a quoted token is not closed")]
    UnclosedQuote,
}

impl Netrc {
    pub fn parse(text: &str) -> Result<Netrc, NetrcError> {
        let mut netrc = Netrc::default();
        let mut tokens = Tokens::new(text);
        while let Some(token) = tokens.next_token()? {
            match token.as_str() {
                "machine" => {
                    let host = tokens.value_of("machine")?;
                    netrc.entries.push(NetrcEntry::new(Some(host)));
                }
                "default" => netrc.entries.push(NetrcEntry::new(None)),
                "login" | "password" | "account" => {
                    let value = tokens.value_of(&token)?;
                    let entry = netrc
                        .entries
                        .last_mut()
                        .ok_or_else(|| NetrcError::OutsideEntry(token.clone()))?;
                    match token.as_str() {
                        "login" => entry.login = Some(value),
                        "password" => entry.password = Some(value),
                        _ => {}
                    }
                }
                "macdef" => {
                    tokens.value_of("macdef")?;
                    tokens.skip_macro();
                }
                _ => return Err(NetrcError::UnknownKeyword(token)),
            }
        }
        Ok(netrc)
    }

    /// The entry for `host`: the first `machine` naming it, else `default`.
    pub fn for_host(&self, host: &str) -> Option<&NetrcEntry> {
        self.entries
            .iter()
            .find(|entry| entry.machine.as_deref() == Some(host))
            .or_else(|| self.entries.iter().find(|entry| entry.machine.is_none()))
    }
}

impl NetrcEntry {
    fn new(machine: Option<String>) -> NetrcEntry {
        NetrcEntry {
            machine,
            login: None,
            password: None,
        }
    }
}

struct Tokens<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens { text, position: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    /// Skips whitespace and comment lines.
    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.position += rest.len() - trimmed.len();
            if trimmed.starts_with('#') {
                let line_end = trimmed.find('\n').unwrap_or(trimmed.len());
                self.position += line_end;
            } else {
                return;
            }
        }
    }

    fn next_token(&mut self) -> Result<Option<String>, NetrcError> {
        self.skip_blank();
        let rest = self.rest();
        if rest.is_empty() {
            return Ok(None);
        }
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.position += 1 + i + 1;
                        return Ok(Some(value));
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    other => value.push(other),
                }
            }
            return Err(NetrcError::UnclosedQuote);
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.position += end;
        Ok(Some(rest[..end].to_string()))
    }

    fn value_of(&mut self, keyword: &str) -> Result<String, NetrcError> {
        self.next_token()?
            .ok_or_else(|| NetrcError::MissingValue(keyword.to_string()))
    }

    /// A macro definition's body runs to the first empty line.
    fn skip_macro(&mut self) {
        let rest = self.rest();
        self.position += rest.find("\n\n").map_or(rest.len(), |end| end + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(machine: Option<&str>, login: Option<&str>, password: Option<&str>) -> NetrcEntry {
        NetrcEntry {
            machine: machine.map(str::to_string),
            login: login.map(str::to_string),
            password: password.map(str::to_string),
        }
    }

    #[test]
    fn reads_machines_and_default() {
        let netrc = Netrc::parse(
            "# FloxHub mirror\nmachine envs.example.com login ci password s3cret\n\
             machine other.example.com\n  login \"a user\"\n  password \"p\\\"w d\"\n  account x\n\
             default login anonymous password guest\n",
        )
        .unwrap();
        assert_eq!(
            netrc.entries,
            vec![
                entry(Some("envs.example.com"), Some("ci"), Some("s3cret")),
                entry(Some("other.example.com"), Some("a user"), Some("p\"w d")),
                entry(None, Some("anonymous"), Some("guest")),
            ]
        );
        assert_eq!(
            netrc.for_host("envs.example.com").unwrap().login.as_deref(),
            Some("ci")
        );
        assert_eq!(
            netrc
                .for_host("unknown.example.com")
                .unwrap()
                .login
                .as_deref(),
            Some("anonymous")
        );
    }

    #[test]
    fn the_first_matching_machine_wins_and_without_default_nothing_matches() {
        let netrc =
            Netrc::parse("machine h login first password 1\nmachine h login second password 2")
                .unwrap();
        assert_eq!(netrc.for_host("h").unwrap().login.as_deref(), Some("first"));
        assert_eq!(netrc.for_host("g"), None);
        assert_eq!(Netrc::parse("").unwrap().for_host("h"), None);
    }

    #[test]
    fn macro_definitions_are_skipped() {
        let netrc =
            Netrc::parse("macdef init\ncd /pub\nbinary\n\nmachine h login l password p").unwrap();
        assert_eq!(netrc.entries, vec![entry(Some("h"), Some("l"), Some("p"))]);
    }

    #[test]
    fn malformed_files_are_named() {
        assert_eq!(
            Netrc::parse("machine h login").unwrap_err().to_string(),
            "\"login\" has no value"
        );
        assert_eq!(
            Netrc::parse("login l password p").unwrap_err().to_string(),
            "\"login\" comes before any \"machine\" or \"default\""
        );
        assert_eq!(
            Netrc::parse("machine h user l").unwrap_err().to_string(),
            "unknown keyword \"user\""
        );
        assert_eq!(
            Netrc::parse("machine h password \"open")
                .unwrap_err()
                .to_string(),
            "a quoted token is not closed"
        );
    }
}
