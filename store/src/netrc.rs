//! The subset of `.netrc` that Nix's `netrc-file` uses: `machine`/`default` entries with
//! `login` and `password`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub login: String,
    pub password: String,
}

/// The credentials for `host`: its `machine` entry, else the `default` entry.
pub fn lookup(text: &str, host: &str) -> Option<Credentials> {
    let mut tokens = Tokens::new(text);
    let mut machine_match = None;
    let mut default_match = None;
    // Which entry the `login`/`password` tokens being read belong to.
    let mut current: Option<(bool, Credentials)> = None;
    let mut finish = |entry: Option<(bool, Credentials)>| {
        if let Some((is_default, credentials)) = entry {
            if is_default {
                default_match.get_or_insert(credentials);
            } else {
                machine_match.get_or_insert(credentials);
            }
        }
    };
    let mut skipping = false;
    while let Some(token) = tokens.next() {
        match token {
            "machine" => {
                finish(current.take());
                let name = tokens.next().unwrap_or_default();
                skipping = name != host;
                if !skipping {
                    current = Some((false, empty()));
                }
            }
            "default" => {
                finish(current.take());
                skipping = false;
                current = Some((true, empty()));
            }
            "login" => {
                let value = tokens.next().unwrap_or_default();
                if let (false, Some((_, credentials))) = (skipping, current.as_mut()) {
                    credentials.login = value.to_string();
                }
            }
            "password" => {
                let value = tokens.next().unwrap_or_default();
                if let (false, Some((_, credentials))) = (skipping, current.as_mut()) {
                    credentials.password = value.to_string();
                }
            }
            "account" => {
                tokens.next();
            }
            "macdef" => {
                tokens.next();
                tokens.skip_macro();
            }
            _ => {}
        }
    }
    finish(current.take());
    machine_match.or(default_match)
}

fn empty() -> Credentials {
    Credentials {
        login: String::new(),
        password: String::new(),
    }
}

struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Tokens { rest: text }
    }

    /// A macro definition runs to the next empty line.
    fn skip_macro(&mut self) {
        match self.rest.find("\n\n") {
            Some(end) => self.rest = &self.rest[end + 2..],
            None => self.rest = "",
        }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let trimmed = self.rest.trim_start();
        if trimmed.is_empty() {
            self.rest = trimmed;
            return None;
        }
        let end = trimmed
            .find(|c: char| c.is_whitespace())
            .unwrap_or(trimmed.len());
        let (token, rest) = trimmed.split_at(end);
        self.rest = rest;
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETRC: &str = "machine cache.example.org login alice password s3cret\n\
                         machine other.example.org\n  login bob\n  password hunter2\n\
                         macdef init\ncd /pub\nmachine evil login x password y\n\n\
                         default login anon password guest\n";

    #[test]
    fn finds_the_machine_entry() {
        assert_eq!(
            lookup(NETRC, "other.example.org"),
            Some(Credentials {
                login: "bob".into(),
                password: "hunter2".into()
            })
        );
        assert_eq!(
            lookup(NETRC, "cache.example.org").unwrap().password,
            "s3cret"
        );
    }

    #[test]
    fn macros_are_not_entries_and_default_is_the_fallback() {
        assert_eq!(lookup(NETRC, "evil").unwrap().login, "anon");
        assert_eq!(lookup(NETRC, "unknown.example.org").unwrap().login, "anon");
        assert_eq!(lookup("machine a login b password c", "z"), None);
    }
}
