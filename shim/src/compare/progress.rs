//! The progress line on stderr: rewritten in place (`\r`) on a terminal, one plain line per
//! step otherwise (logs, CI, a test capturing stderr).

use std::io::{IsTerminal, Write};

#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    total: usize,
    done: usize,
    width: usize,
}

impl Progress {
    /// A progress line counting to `total` steps; `quiet` prints nothing.
    pub fn new(total: usize, quiet: bool) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            quiet,
            total: total.max(1),
            done: 0,
            width: 0,
        }
    }

    /// Announces the step about to run.
    pub fn step(&mut self, what: &str) {
        self.done = (self.done + 1).min(self.total);
        if self.quiet {
            return;
        }
        let line = format!("ward compare [{}/{}] {what}", self.done, self.total);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let pad = self.width.saturating_sub(line.chars().count());
            let _ = write!(err, "\r{line}{}", " ".repeat(pad));
            self.width = line.chars().count();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// A line that must stay visible (a note), printed above the progress line.
    pub fn note(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty && self.width > 0 {
            let _ = write!(err, "\r{}\r", " ".repeat(self.width));
            self.width = 0;
        }
        let _ = writeln!(err, "ward compare: {text}");
    }

    /// Clears the line at the end.
    pub fn finish(&mut self) {
        if self.tty && !self.quiet && self.width > 0 {
            let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(self.width));
        }
    }
}
