//! Shared by the benchmarks that start the real console.

use std::io::BufRead;
use std::time::{Duration, Instant};

/// Reads the console's output until its "type a message" line (the prompt
/// line when a model is configured); returns the time from `started` to
/// that line, or `None` if the output ended first.
pub fn time_to_prompt(out: &mut impl BufRead, started: Instant) -> Option<Duration> {
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        if line.contains("type a message") {
            return Some(started.elapsed());
        }
        line.clear();
    }
    None
}
