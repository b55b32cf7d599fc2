//! RELIABILITY.md's `## Hostile input` section is written by hand on another branch (the fuzzing
//! work): the generator keeps it byte for byte, from its heading to the next `## ` heading or
//! the end of the file.

/// The heading the section starts with.
pub const HEADING: &str = "## Hostile input";

/// The section of `markdown`, heading included, exactly as it is there (with the newline that
/// ends its last line); `None` if there is none.
pub fn extract(markdown: &str) -> Option<&str> {
    let start = line_starts(markdown).find(|&i| is_heading_line(&markdown[i..]))?;
    let end = line_starts(markdown)
        .filter(|&i| i > start)
        .find(|&i| markdown[i..].starts_with("## "))
        .unwrap_or(markdown.len());
    Some(&markdown[start..end])
}

/// Whether the line starting at `rest` is the section's heading (and not, say,
/// `## Hostile inputs elsewhere`).
fn is_heading_line(rest: &str) -> bool {
    let line = rest.split('\n').next().unwrap_or_default();
    line.trim_end() == HEADING
}

/// Byte offsets where lines start.
fn line_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(
        text.match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(move |&i| i < text.len()),
    )
}

/// `generated` with `kept` appended as its own section, separated by a blank line.
pub fn append(mut generated: String, kept: Option<&str>) -> String {
    if let Some(section) = kept {
        if !generated.ends_with("\n\n") {
            generated.push_str(if generated.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            });
        }
        generated.push_str(section);
    }
    generated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_section_up_to_the_next_heading_verbatim() {
        let md =
            "# R\n\n## Summary\n\nx\n\n## Hostile input\n\n| a |  b |\n\ttab  \n\n## Churn\n\ny\n";
        assert_eq!(
            extract(md),
            Some("## Hostile input\n\n| a |  b |\n\ttab  \n\n")
        );
    }

    #[test]
    fn keeps_the_section_to_the_end_without_a_final_newline() {
        let md = "# R\n## Hostile input\nlast line without newline";
        assert_eq!(
            extract(md),
            Some("## Hostile input\nlast line without newline")
        );
    }

    #[test]
    fn a_similar_heading_or_a_subsection_is_not_the_end_or_the_start() {
        let md = "## Hostile inputs of another kind\n\n## Hostile input\n### fuzzers\nz\n## Next\n";
        assert_eq!(extract(md), Some("## Hostile input\n### fuzzers\nz\n"));
        assert_eq!(extract("# nothing here\n"), None);
    }

    #[test]
    fn appending_round_trips() {
        let kept = "## Hostile input\n\nhand-written\n";
        let written = append("# R\n\n## Summary\n".to_owned(), Some(kept));
        assert_eq!(extract(&written), Some(kept));
        assert_eq!(append("# R\n".to_owned(), None), "# R\n");
    }
}
