//! How `nixlet env fetch` shows a fetch while it runs: a bar (paths, bytes, rate) when stderr
//! is a terminal, plain lines on stdout otherwise (a log, a pipe, CI), so that the output of a
//! non-interactive run reads well and can be checked by scripts.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nixlet_store::{FetchProgress, FetchSummary, ProgressSnapshot};

/// How often plain lines may be printed; a line is printed only when something changed.
const LINE_INTERVAL: Duration = Duration::from_secs(2);
const BAR_INTERVAL: Duration = Duration::from_millis(100);

/// Shows `progress` until the returned reporter is finished.
pub struct Reporter {
    progress: Arc<FetchProgress>,
    started: Instant,
    display: Display,
}

enum Display {
    Bar(ProgressBar),
    Lines {
        last: Option<ProgressSnapshot>,
        last_printed: Instant,
        announced: bool,
    },
}

impl Reporter {
    /// A bar if stderr is a terminal, lines otherwise.
    pub fn for_this_terminal(progress: Arc<FetchProgress>) -> Reporter {
        let display = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} paths  {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_message("looking up the closure");
            // Drawn at once: walking a large closure takes a while before the first count.
            bar.tick();
            Display::Bar(bar)
        } else {
            Display::Lines {
                last: None,
                last_printed: Instant::now(),
                announced: false,
            }
        };
        Reporter {
            progress,
            started: Instant::now(),
            display,
        }
    }

    /// How often [`Reporter::tick`] should run.
    pub fn interval(&self) -> Duration {
        match self.display {
            Display::Bar(_) => BAR_INTERVAL,
            Display::Lines { .. } => Duration::from_millis(200),
        }
    }

    pub fn tick(&mut self) {
        let snapshot = self.progress.snapshot();
        let elapsed = self.started.elapsed();
        match &mut self.display {
            Display::Bar(bar) => {
                if snapshot.paths_to_fetch > 0 {
                    bar.set_length(snapshot.paths_to_fetch as u64);
                    bar.set_position(snapshot.paths_done as u64);
                    bar.set_message(bytes_and_rate(&snapshot, elapsed));
                }
                bar.tick();
            }
            Display::Lines {
                last,
                last_printed,
                announced,
            } => {
                if !*announced && snapshot.paths_to_fetch > 0 {
                    println!("{}", plan_line(&snapshot));
                    *announced = true;
                }
                if *announced && last_printed.elapsed() >= LINE_INTERVAL && *last != Some(snapshot)
                {
                    println!("{}", progress_line(&snapshot, elapsed));
                    *last = Some(snapshot);
                    *last_printed = Instant::now();
                }
            }
        }
    }

    /// Clears the bar (or ends the lines) and prints the outcome.
    pub fn finish(self, outcome: Option<&FetchSummary>) {
        let snapshot = self.progress.snapshot();
        match self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines { announced, .. } => {
                if !announced && snapshot.paths_to_fetch > 0 {
                    println!("{}", plan_line(&snapshot));
                }
            }
        }
        if let Some(summary) = outcome {
            println!("{}", summary_line(summary));
        }
    }
}

pub fn plan_line(snapshot: &ProgressSnapshot) -> String {
    format!(
        "fetching {} paths ({} unpacked)",
        snapshot.paths_to_fetch,
        human_bytes(snapshot.nar_bytes_to_fetch)
    )
}

pub fn progress_line(snapshot: &ProgressSnapshot, elapsed: Duration) -> String {
    format!(
        "fetched {}/{} paths, {}",
        snapshot.paths_done,
        snapshot.paths_to_fetch,
        bytes_and_rate(snapshot, elapsed)
    )
}

pub fn summary_line(summary: &FetchSummary) -> String {
    format!(
        "fetched {} paths ({} downloaded, {} unpacked) in {:.1}s at {}; {} already present; \
         closure of {} paths",
        summary.paths_fetched,
        human_bytes(summary.bytes_downloaded),
        human_bytes(summary.nar_bytes),
        summary.elapsed.as_secs_f64(),
        rate(summary.bytes_downloaded, summary.elapsed),
        summary.paths_already_valid,
        summary.closure.len()
    )
}

fn bytes_and_rate(snapshot: &ProgressSnapshot, elapsed: Duration) -> String {
    format!(
        "{} downloaded, {}",
        human_bytes(snapshot.bytes_downloaded),
        rate(snapshot.bytes_downloaded, elapsed)
    )
}

pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "- /s".to_string();
    }
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

/// Binary units, one decimal above bytes: `0 B`, `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn lines_say_paths_bytes_and_rate() {
        let snapshot = ProgressSnapshot {
            paths_to_fetch: 12,
            nar_bytes_to_fetch: 3 * 1024 * 1024,
            paths_done: 5,
            bytes_downloaded: 2 * 1024 * 1024,
        };
        assert_eq!(plan_line(&snapshot), "fetching 12 paths (3.0 MiB unpacked)");
        assert_eq!(
            progress_line(&snapshot, Duration::from_secs(2)),
            "fetched 5/12 paths, 2.0 MiB downloaded, 1.0 MiB/s"
        );
        assert_eq!(rate(10, Duration::ZERO), "- /s");
        let summary = FetchSummary {
            paths_fetched: 12,
            paths_already_valid: 3,
            bytes_downloaded: 2 * 1024 * 1024,
            nar_bytes: 3 * 1024 * 1024,
            closure: Vec::new(),
            elapsed: Duration::from_millis(500),
            ..FetchSummary::default()
        };
        assert_eq!(
            summary_line(&summary),
            "fetched 12 paths (2.0 MiB downloaded, 3.0 MiB unpacked) in 0.5s at 4.0 MiB/s; \
             3 already present; closure of 0 paths"
        );
    }
}
