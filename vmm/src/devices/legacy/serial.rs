//! The 8250 UART at COM1 (vm-superio), wired to the VMM's stdout, a file, or nothing.
//!
//! Output is line-buffered (the UART hands over one byte per write) and watched for two
//! kernel lines. The panic line: a panicking guest with `panic=-1 reboot=k` resets exactly
//! like a clean `reboot`, and the panic line on the console is what tells the two apart.
//! The power-off line: without ACPI, `poweroff` ends in a halted CPU the VMM never hears
//! about, so the line is the only signal that the guest is done.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::Serial;
use vm_superio::serial::NoEvents;

use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;
use crate::metrics::Metrics;

/// What Linux prints (at KERN_EMERG, so on every console) when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";
/// What Linux prints when it powers off, or halts for want of a way to power off
/// ("reboot: Power off not available: System halted instead" without ACPI).
pub const POWER_OFF_MARKERS: [&str; 2] = ["reboot: Power down", "System halted"];
const LINE_MAX: usize = 512;
const FLUSH_AT: usize = 4096;

/// The panic line, once the guest printed one.
pub type PanicLine = Arc<Mutex<Option<String>>>;

/// The console's output side.
pub struct ConsoleOut {
    out: Option<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    line: Vec<u8>,
    panic: PanicLine,
    metrics: Arc<Metrics>,
    /// Signalled (and set) when the guest prints a power-off line.
    power_off: Option<(EventFd, Arc<AtomicBool>)>,
}

impl std::fmt::Debug for ConsoleOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOut")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ConsoleOut {
    /// `out` = `None` drops the output (the panic watch still runs).
    pub fn new(
        out: Option<Box<dyn Write + Send>>,
        panic: PanicLine,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            out,
            pending: Vec::with_capacity(FLUSH_AT),
            line: Vec::with_capacity(LINE_MAX),
            panic,
            metrics,
            power_off: None,
        }
    }

    /// Signals `evt` and sets `flag` when the guest prints a power-off line.
    #[must_use]
    pub fn on_power_off(mut self, evt: EventFd, flag: Arc<AtomicBool>) -> Self {
        self.power_off = Some((evt, flag));
        self
    }

    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        if text.contains(PANIC_MARKER) {
            let mut slot = self.panic.lock().expect("panic line lock");
            if slot.is_none() {
                *slot = Some(text.trim_end().to_owned());
            }
        } else if POWER_OFF_MARKERS.iter().any(|m| text.contains(m)) {
            if let Some((evt, flag)) = &self.power_off {
                flag.store(true, Ordering::Relaxed);
                let _ = evt.write(1);
            }
        }
        self.line.clear();
    }

    /// Writes out what is buffered.
    pub fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(out) = &mut self.out {
            // A closed stdout must not stop the guest: its output is lost, nothing more.
            let _ = out.write_all(&self.pending).and_then(|()| out.flush());
        }
        self.pending.clear();
    }
}

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.metrics
            .serial_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        for &b in buf {
            if b == b'\n' {
                self.end_line();
            } else if self.line.len() < LINE_MAX {
                self.line.push(b);
            }
        }
        self.pending.extend_from_slice(buf);
        if buf.contains(&b'\n') || self.pending.len() >= FLUSH_AT {
            self.flush_pending();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // The UART flushes after every byte; batching happens in `write`, and the event
        // loop calls `flush_pending` for prompts that end without a newline.
        Ok(())
    }
}

/// COM1 on the PIO bus.
#[derive(Debug)]
pub struct SerialDevice(pub Serial<EventFdTrigger, NoEvents, ConsoleOut>);

impl SerialDevice {
    pub fn new(interrupt: EventFdTrigger, out: ConsoleOut) -> Self {
        Self(Serial::new(interrupt, out))
    }

    /// Hands input bytes to the guest; returns how many the FIFO took.
    pub fn enqueue(&mut self, input: &[u8]) -> usize {
        self.0.enqueue_raw_bytes(input).unwrap_or(0)
    }

    pub fn flush_output(&mut self) {
        self.0.writer_mut().flush_pending();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 {
            data[0] = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            // Errors are a failed interrupt trigger or a lost byte: nothing to do about them
            // on a console.
            let _ = self.0.write(offset as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_panic_line_across_byte_writes() {
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let panic = PanicLine::default();
        let sink = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::default());
        let mut out = ConsoleOut::new(
            Some(Box::new(Shared(sink.clone()))),
            panic.clone(),
            metrics.clone(),
        );
        let text = "[ 1.0] ok\n[ 1.2] Kernel panic - not syncing: Attempted to kill init!\nmore";
        for b in text.bytes() {
            out.write_all(&[b]).unwrap();
        }
        assert_eq!(
            panic.lock().unwrap().as_deref(),
            Some("[ 1.2] Kernel panic - not syncing: Attempted to kill init!")
        );
        // Whole lines are out; the unterminated tail waits for a flush.
        assert_eq!(sink.lock().unwrap().len(), text.len() - 4);
        out.flush_pending();
        assert_eq!(sink.lock().unwrap().as_slice(), text.as_bytes());
        assert_eq!(
            metrics.serial_bytes.load(Ordering::Relaxed),
            text.len() as u64
        );
    }
}
