//! A minimal `log` backend: one line per record on stderr (the serial console in a guest),
//! level from `WARD_AGENT_LOG` (default info). No formatting crates in the guest initrd.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr {
    prefix: &'static str,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warn",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            let _ = writeln!(
                std::io::stderr(),
                "{}{level}: {}",
                self.prefix,
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls do nothing.
pub fn init(in_guest: bool) {
    let level = std::env::var("WARD_AGENT_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Info);
    let prefix = if in_guest {
        "ward-agent[guest] "
    } else {
        "ward-agent "
    };
    let logger: &'static Stderr = Box::leak(Box::new(Stderr { prefix }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
