//! A one-line progress bar on stderr, drawn only when stderr is a terminal, at most every 100 ms.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::human_bytes;

/// Progress through a known number of objects.
pub struct Bar {
    total_objects: usize,
    total_bytes: Option<u64>,
    started: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl Bar {
    /// A bar for `total_objects` objects (of `total_bytes`, if known), started now.
    pub fn new(total_objects: usize, total_bytes: Option<u64>) -> Self {
        Self {
            total_objects,
            total_bytes,
            started: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Draws `label`, `done` objects and `bytes`; `last` draws whatever the time, and ends the line.
    pub fn draw(&mut self, label: &str, done: usize, bytes: u64, last: bool) {
        if !self.tty || (!last && self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(100))) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let share = if self.total_objects == 0 {
            1.0
        } else {
            done as f64 / self.total_objects as f64
        };
        let width = 30;
        let filled = ((share * width as f64) as usize).min(width);
        let amount = match self.total_bytes {
            Some(total) => format!("{} / {}", human_bytes(bytes), human_bytes(total)),
            None => human_bytes(bytes),
        };
        let rate = bytes as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{label}[{}{}] {done}/{} objects, {amount}, {}/s   ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.total_objects,
            human_bytes(rate as u64)
        );
        if last {
            let _ = writeln!(err);
        }
    }
}
