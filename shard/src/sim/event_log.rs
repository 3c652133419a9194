//! The short event log: one line per simulated event (delivery, tick round, crash,
//! election, commit, client operation), stamped with simulated time. It keeps the last
//! lines in a ring so a failing seed can print what led up to it, and echoes every line
//! to stderr when `QUASAR_SIM_LOG=1`.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::clock::SimTime;

/// Lines kept for a failure report.
const DEFAULT_KEEP_LINES: usize = 400;

/// A bounded log of one-line events.
#[derive(Debug, Clone)]
pub struct EventLog {
    lines: VecDeque<String>,
    keep: usize,
    echo: bool,
    total: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new()
    }
}

impl EventLog {
    /// A log keeping the last few hundred lines; echoes when `QUASAR_SIM_LOG` is set.
    #[must_use]
    pub fn new() -> EventLog {
        let echo = std::env::var("QUASAR_SIM_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
        EventLog {
            lines: VecDeque::new(),
            keep: DEFAULT_KEEP_LINES,
            echo,
            total: 0,
        }
    }

    /// Records one event at `now`.
    pub fn record(&mut self, now: SimTime, line: impl AsRef<str>) {
        let mut s = String::with_capacity(16 + line.as_ref().len());
        let _ = write!(s, "{now:>6} {}", line.as_ref());
        if self.echo {
            eprintln!("{s}");
        }
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        self.lines.push_back(s);
        self.total += 1;
    }

    /// Events recorded so far (including those no longer kept).
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept lines, oldest first, joined with newlines.
    #[must_use]
    pub fn tail(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        let mut log = EventLog::new();
        for i in 0..(DEFAULT_KEEP_LINES as u64 + 5) {
            log.record(SimTime(i), format!("event {i}"));
        }
        assert_eq!(log.total(), DEFAULT_KEEP_LINES as u64 + 5);
        let tail = log.tail();
        assert!(!tail.contains("event 4\n"));
        assert!(tail.contains("    t5 event 5\n"));
    }
}
