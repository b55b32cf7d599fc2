//! Expansion of `${NAME}` references between the variables of a manifest's `[vars]`.
//!
//! Only references to another variable of the same `[vars]` table are expanded. Everything
//! else is left exactly as written: `${HOME}` may name a variable of the container's own
//! environment, which only exists when the container starts, and a variable referring to
//! itself (`PATH = "${PATH}:/opt/bin"`) means the value it had before, as in a shell. `$$` and
//! `$NAME` without braces are not special.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsError {
    /// The names along the cycle, starting and ending with the same name.
    #[error("[vars] reference each other in a cycle: {}", quoted_chain(.0))]
    Cycle(Vec<String>),
}

fn quoted_chain(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// True for names a `[vars]` entry may have: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A piece of a value: text kept as is, or a reference to another variable of `[vars]`.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Reference(&'a str),
}

/// Expands references between `vars` and returns every variable once, each after the
/// variables it refers to, and otherwise in alphabetical order.
pub fn expand_vars(vars: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, VarsError> {
    let pieces: BTreeMap<&str, Vec<Piece>> = vars
        .iter()
        .map(|(name, value)| (name.as_str(), split_references(name, value, vars)))
        .collect();
    let order = dependency_order(&pieces)?;

    let mut expanded: BTreeMap<&str, String> = BTreeMap::new();
    for name in &order {
        let value = pieces[name]
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => *text,
                Piece::Reference(other) => expanded[other].as_str(),
            })
            .collect::<String>();
        expanded.insert(name, value);
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let value = expanded.remove(name).unwrap_or_default();
            (name.to_string(), value)
        })
        .collect())
}

/// Splits `value` into text and references to *other* variables of `vars`.
fn split_references<'a>(
    own_name: &str,
    value: &'a str,
    vars: &BTreeMap<String, String>,
) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut search_from = 0;
    while let Some(offset) = value[search_from..].find("${") {
        let open = search_from + offset;
        let Some(close) = value[open + 2..].find('}').map(|i| open + 2 + i) else {
            break;
        };
        let name = &value[open + 2..close];
        if name != own_name && vars.contains_key(name) {
            if text_start < open {
                pieces.push(Piece::Text(&value[text_start..open]));
            }
            pieces.push(Piece::Reference(name));
            text_start = close + 1;
            search_from = close + 1;
        } else {
            search_from = open + 2;
        }
    }
    if text_start < value.len() {
        pieces.push(Piece::Text(&value[text_start..]));
    }
    pieces
}

/// The alphabetically smallest order that puts every variable after those it refers to.
fn dependency_order<'a>(
    pieces: &BTreeMap<&'a str, Vec<Piece<'a>>>,
) -> Result<Vec<&'a str>, VarsError> {
    let dependencies: BTreeMap<&str, BTreeSet<&str>> = pieces
        .iter()
        .map(|(name, pieces)| {
            let referenced = pieces
                .iter()
                .filter_map(|piece| match piece {
                    Piece::Reference(other) => Some(*other),
                    Piece::Text(_) => None,
                })
                .collect();
            (*name, referenced)
        })
        .collect();

    let mut order = Vec::with_capacity(dependencies.len());
    let mut placed = BTreeSet::new();
    while order.len() < dependencies.len() {
        let ready = dependencies
            .iter()
            .find(|(name, deps)| !placed.contains(*name) && deps.is_subset(&placed))
            .map(|(name, _)| *name);
        match ready {
            Some(name) => {
                placed.insert(name);
                order.push(name);
            }
            None => return Err(VarsError::Cycle(find_cycle(&dependencies, &placed))),
        }
    }
    Ok(order)
}

/// Every variable not yet placed depends on another one not yet placed, so walking those
/// dependencies must come back to a name already seen: that loop is a cycle.
fn find_cycle(
    dependencies: &BTreeMap<&str, BTreeSet<&str>>,
    placed: &BTreeSet<&str>,
) -> Vec<String> {
    let unplaced = |name: &&str| !placed.contains(name);
    let mut path: Vec<&str> = Vec::new();
    let mut current = dependencies.keys().copied().find(unplaced);
    while let Some(name) = current {
        if let Some(start) = path.iter().position(|seen| *seen == name) {
            let mut cycle: Vec<&str> = path[start..].to_vec();
            // Start at the smallest name so that the message does not depend on where the
            // walk entered the cycle.
            let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(smallest);
            cycle.push(cycle[0]);
            return cycle.into_iter().map(str::to_string).collect();
        }
        path.push(name);
        current = dependencies[name].iter().copied().find(unplaced);
    }
    path.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn without_references_the_order_is_alphabetical() {
        let input = vars(&[("PORT", "8080"), ("GREETING", "hello"), ("_X", "")]);
        assert_eq!(
            expand_vars(&input).unwrap(),
            pairs(&[("GREETING", "hello"), ("PORT", "8080"), ("_X", "")])
        );
    }

    #[test]
    fn references_expand_in_dependency_order() {
        let input = vars(&[
            ("APP_HOME", "/srv/${APP_NAME}"),
            ("APP_NAME", "echo"),
            ("CONFIG", "${APP_HOME}/config.toml"),
            ("BANNER", "${APP_NAME} on ${APP_HOME}"),
        ]);
        assert_eq!(
            expand_vars(&input).unwrap(),
            pairs(&[
                ("APP_NAME", "echo"),
                ("APP_HOME", "/srv/echo"),
                ("BANNER", "echo on /srv/echo"),
                ("CONFIG", "/srv/echo/config.toml"),
            ])
        );
    }

    #[test]
    fn unknown_and_self_references_stay_as_written() {
        let input = vars(&[
            ("PATH", "${PATH}:/opt/bin"),
            ("DATA", "${HOME}/data"),
            ("COPY", "${PATH}"),
        ]);
        assert_eq!(
            expand_vars(&input).unwrap(),
            pairs(&[
                ("DATA", "${HOME}/data"),
                ("PATH", "${PATH}:/opt/bin"),
                ("COPY", "${PATH}:/opt/bin"),
            ])
        );
    }

    #[test]
    fn only_braced_references_to_valid_names_are_special() {
        let input = vars(&[
            ("A", "x"),
            ("B", "$$A $A ${A ${ A} ${A}${A} ${"),
            ("C", "${A}}"),
        ]);
        assert_eq!(
            expand_vars(&input).unwrap(),
            pairs(&[("A", "x"), ("B", "$$A $A ${A ${ A} xx ${"), ("C", "x}")])
        );
    }

    #[test]
    fn expanded_text_is_not_expanded_again() {
        // E spells "${A}" only once D is substituted; a second pass would turn it into "a".
        let input = vars(&[("A", "a"), ("D", "${"), ("E", "${D}A}")]);
        assert_eq!(
            expand_vars(&input).unwrap(),
            pairs(&[("A", "a"), ("D", "${"), ("E", "${A}")])
        );
    }

    #[test]
    fn a_cycle_is_an_error_listing_it() {
        let input = vars(&[
            ("A", "${B}"),
            ("B", "${C}"),
            ("C", "${B}-${D}"),
            ("D", "plain"),
        ]);
        assert_eq!(
            expand_vars(&input).unwrap_err().to_string(),
            "[vars] reference each other in a cycle: \"B\" -> \"C\" -> \"B\""
        );
    }

    #[test]
    fn a_longer_cycle_starts_at_its_smallest_name() {
        let input = vars(&[("Z", "${X}"), ("X", "${Y}"), ("Y", "${Z}")]);
        assert_eq!(
            expand_vars(&input).unwrap_err(),
            VarsError::Cycle(vec!["X".into(), "Y".into(), "Z".into(), "X".into()])
        );
    }

    #[test]
    fn var_names() {
        for good in ["A", "_", "a_1", "PATH", "_private9"] {
            assert!(is_valid_var_name(good), "{good:?}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A.B"] {
            assert!(!is_valid_var_name(bad), "{bad:?}");
        }
    }
}
