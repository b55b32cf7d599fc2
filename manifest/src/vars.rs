//! Expansion of `${NAME}` references between the variables of a manifest's `[vars]`.
//!
//! Only references to another variable of the same `[vars]` table are expanded. Everything
//! else is left exactly as written: `${HOME}` may name a variable of the container's own
//! environment, which only exists when the container starts, and a variable referring to
//! itself (`PATH = "${PATH}:/opt/bin"`) means the value it had before, as in a shell. `$$` and
//! `$NAME` without braces are not special.

use std::collections::{BTreeMap, BTreeSet};

/// The longest value a variable with references may expand to: Linux refuses a larger
/// environment string
/// (`MAX_ARG_STRLEN`, 32 pages) at exec anyway, and without a bound a few lines of doubling
/// references (`A = "${B}${B}"`, `B = "${C}${C}"`, …) would expand to more than memory holds.
pub const MAX_EXPANDED_LEN: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarsError {
    /// The names along the cycle, starting and ending with the same name.
    #[error("[vars] reference each other in a cycle: {}", quoted_chain(.0))]
    Cycle(Vec<String>),
    #[error("[vars] {name:?} expands to more than {MAX_EXPANDED_LEN} bytes")]
    TooLong { name: String },
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
        let parts: Vec<&str> = pieces[name]
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => *text,
                Piece::Reference(other) => expanded[other].as_str(),
            })
            .collect();
        // Measured before anything is built: every part is bounded already, so the sum is too.
        // A value without references is as long as the manifest made it, and left alone.
        let expands = pieces[name]
            .iter()
            .any(|piece| matches!(piece, Piece::Reference(_)));
        if expands && parts.iter().map(|part| part.len()).sum::<usize>() > MAX_EXPANDED_LEN {
            return Err(VarsError::TooLong {
                name: name.to_string(),
            });
        }
        expanded.insert(name, parts.concat());
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
///
/// A reference is `${` a valid name `}`; names are checked when the manifest is read, so no
/// other text between braces can name a variable. Scanning only name characters keeps this
/// linear: looking for the next `}` from every `${` took quadratic time on `${${${…}`.
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
        let after = &value[open + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if !after[name_len..].starts_with('}') {
            search_from = open + 2;
            continue;
        }
        let close = open + 2 + name_len;
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

    // Kahn's algorithm with the ready names kept sorted: always placing the smallest ready
    // name gives the alphabetically smallest order, in O(n log n) where searching every name
    // for a ready one each time took quadratic time on a long chain.
    let mut waiting: BTreeMap<&str, usize> = dependencies
        .iter()
        .map(|(name, deps)| (*name, deps.len()))
        .collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, deps) in &dependencies {
        for dep in deps {
            dependents.entry(*dep).or_default().push(*name);
        }
    }
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut order = Vec::with_capacity(dependencies.len());
    let mut placed = BTreeSet::new();
    while let Some(name) = ready.pop_first() {
        placed.insert(name);
        order.push(name);
        for dependent in dependents.get(name).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.insert(*dependent);
                }
            }
        }
    }
    if order.len() < dependencies.len() {
        return Err(VarsError::Cycle(find_cycle(&dependencies, &placed)));
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
    // Where each name is on the path: searching the path took quadratic time on long cycles.
    let mut position: BTreeMap<&str, usize> = BTreeMap::new();
    let mut current = dependencies.keys().copied().find(unplaced);
    while let Some(name) = current {
        if let Some(&start) = position.get(name) {
            let mut cycle: Vec<&str> = path[start..].to_vec();
            // Start at the smallest name so that the message does not depend on where the
            // walk entered the cycle.
            let smallest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(smallest);
            cycle.push(cycle[0]);
            return cycle.into_iter().map(str::to_string).collect();
        }
        position.insert(name, path.len());
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
    fn doubling_references_are_refused_before_they_are_built() {
        // 64 levels would expand to 2^64 bytes.
        let mut entries: Vec<(String, String)> = (0..64)
            .map(|i| {
                (
                    format!("V{i:02}"),
                    format!("${{V{:02}}}${{V{:02}}}", i + 1, i + 1),
                )
            })
            .collect();
        entries.push(("V64".to_string(), "xxxxxxxx".to_string()));
        let vars: BTreeMap<String, String> = entries.into_iter().collect();
        let error = expand_vars(&vars).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("[vars] \"V49\" expands to more than {MAX_EXPANDED_LEN} bytes")
        );
        // Right at the limit is still fine.
        let at_limit = vars_of(&[("A", &"x".repeat(MAX_EXPANDED_LEN / 2)), ("B", "${A}${A}")]);
        assert_eq!(expand_vars(&at_limit).unwrap()[1].1.len(), MAX_EXPANDED_LEN);
    }

    #[test]
    fn long_chains_and_long_values_take_linear_time() {
        // Each took hours before: a quadratic search for the next ready name over 200,000
        // variables, and a quadratic search for `}` in a megabyte of `${`.
        let started = std::time::Instant::now();
        let mut chain: BTreeMap<String, String> = (1..200_000)
            .map(|i| (format!("V{i:06}"), format!("${{V{:06}}}", i - 1)))
            .collect();
        chain.insert("V000000".to_string(), "end".to_string());
        let expanded = expand_vars(&chain).unwrap();
        assert_eq!(
            expanded.last().unwrap(),
            &("V199999".to_string(), "end".to_string())
        );
        // The same chain closed into a cycle is reported, just as fast.
        chain.insert("V000000".to_string(), "${V199999}".to_string());
        assert!(
            matches!(expand_vars(&chain), Err(VarsError::Cycle(cycle)) if cycle.len() == 200_001)
        );
        let braces = format!("{}}}", "${".repeat(500_000));
        let expanded = expand_vars(&vars_of(&[("A", &braces), ("B", "b")])).unwrap();
        assert_eq!(expanded[0].1, braces);
        let braces = format!("${{B}}{}}}", "${".repeat(50_000));
        let expanded = expand_vars(&vars_of(&[("A", &braces), ("B", "b")])).unwrap();
        assert_eq!(expanded[1].1.len(), braces.len() - "${B}".len() + 1);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    fn vars_of(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
