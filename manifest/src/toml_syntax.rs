//! A TOML syntax error as one short line: where it is, what the parser expected, and a few
//! characters around the spot.
//!
//! Why not the parser's own message: it prints the whole offending line, and a manifest comes
//! from whoever publishes environments; a line of megabytes would be copied into containerd's
//! log and the pod's Kubernetes Event.

use std::fmt;

/// Characters shown on each side of the error's column.
const CONTEXT_CHARS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlSyntax {
    /// 1-based, as editors count.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending line around the column (escaped when shown); empty at the end of the text.
    pub excerpt: String,
}

impl TomlSyntax {
    pub fn of(text: &str, error: &toml::de::Error) -> TomlSyntax {
        let message = error.message().trim_end().replace('\n', "; ");
        let offset = error
            .span()
            .map_or(text.len(), |span| span.start.min(text.len()));
        let before = &text[..floor_char_boundary(text, offset)];
        let line_start = before.rfind('\n').map_or(0, |at| at + 1);
        let line_end = text[line_start..]
            .find('\n')
            .map_or(text.len(), |at| line_start + at);
        let column_chars = before[line_start..].chars().count();
        let line_text = &text[line_start..line_end];
        let excerpt: String = line_text
            .chars()
            .skip(column_chars.saturating_sub(CONTEXT_CHARS))
            .take(2 * CONTEXT_CHARS)
            .collect();
        TomlSyntax {
            line: before.matches('\n').count() + 1,
            column: column_chars + 1,
            message,
            excerpt,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Display for TomlSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )?;
        if !self.excerpt.is_empty() {
            write!(f, ", near {:?}", self.excerpt)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(text: &str) -> TomlSyntax {
        let error = text.parse::<toml::Table>().unwrap_err();
        TomlSyntax::of(text, &error)
    }

    #[test]
    fn names_line_column_and_the_text_around_it() {
        let found = syntax("version = 1\n[install\n");
        assert_eq!((found.line, found.column), (2, 9));
        assert_eq!(found.excerpt, "[install");
        assert!(
            found.to_string().starts_with("line 2, column 9: "),
            "{found}"
        );
    }

    #[test]
    fn a_line_of_a_megabyte_is_quoted_in_part() {
        let text = format!("version = 1\nx = \"{}\" junk\n", "a".repeat(1 << 20));
        let found = syntax(&text);
        let message = found.to_string();
        assert!(
            message.len() < 300,
            "{} bytes: {message:.300}",
            message.len()
        );
        assert_eq!(found.line, 2);
        assert!(found.excerpt.ends_with("\" junk"), "{:?}", found.excerpt);
    }

    #[test]
    fn control_characters_are_escaped() {
        let message = syntax("version = 1\nx = \u{1b}[31m\n").to_string();
        assert!(!message.contains('\u{1b}'), "{message:?}");
    }
}
