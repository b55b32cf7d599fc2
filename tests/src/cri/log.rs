//! The CRI container log format, as containerd writes it:
//! `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`, where `P` marks a partial line continued by
//! the next record of the same stream.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: String,
    pub text: String,
}

/// Parses a log file's content into whole lines (partial records joined).
pub fn parse_log(content: &str) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = Vec::new();
    let mut partial: Option<LogLine> = None;
    for record in content.lines() {
        let mut fields = record.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let text = fields.next().unwrap_or_default();
        let line = match partial.take() {
            Some(mut started) if started.stream == stream => {
                started.text.push_str(text);
                started
            }
            other => {
                lines.extend(other);
                LogLine {
                    stream: stream.to_owned(),
                    text: text.to_owned(),
                }
            }
        };
        if tag == "P" {
            partial = Some(line);
        } else {
            lines.push(line);
        }
    }
    lines.extend(partial);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_prefixes_and_joins_partials() {
        let content = "2024-01-01T00:00:00.1Z stdout F hello world\n\
                       2024-01-01T00:00:00.2Z stderr P par\n\
                       2024-01-01T00:00:00.3Z stderr F tial\n\
                       2024-01-01T00:00:00.4Z stdout F \n";
        let lines = parse_log(content);
        let texts: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("stdout", "hello world"),
                ("stderr", "partial"),
                ("stdout", "")
            ]
        );
    }
}
