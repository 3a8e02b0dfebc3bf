//! The i8042 keyboard controller, there for one reason: `reboot=k` makes Linux pulse its
//! reset line (command 0xfe on port 0x64), which ends the VM.
//!
//! It also answers the controller commands Linux's i8042 driver sends while probing (read
//! and write the control byte, self tests, AUX loop), promptly and with "no AUX port": a
//! controller that stays silent makes the driver wait out its timeouts, which costs the
//! boot hundreds of milliseconds. There is no keyboard behind it.

use std::collections::VecDeque;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM_FLAG: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
const STATUS_KBD_UNLOCKED: u8 = 0x10;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_AUX_LOOP: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// Any non-zero answer other than 0xfa/0xff: Linux concludes there is no AUX port.
const AUX_TEST_FAILED: u8 = 0x01;
/// Keyboard interrupt on, system flag, translation on: what a BIOS leaves behind.
const INITIAL_CTR: u8 = 0x45;

/// i8042 at ports 0x60–0x64; `reset` fires on the guest's reset request.
#[derive(Debug)]
pub struct I8042 {
    reset: EventFdTrigger,
    ctr: u8,
    output_port: u8,
    out: VecDeque<u8>,
    /// A command waiting for its data byte on port 0x60.
    pending: Option<u8>,
    last_was_command: bool,
}

impl I8042 {
    pub fn new(reset: EventFdTrigger) -> Self {
        Self {
            reset,
            ctr: INITIAL_CTR,
            output_port: 0x01,
            out: VecDeque::new(),
            pending: None,
            last_was_command: false,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STATUS_SYSTEM_FLAG | STATUS_KBD_UNLOCKED;
        if !self.out.is_empty() {
            s |= STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            s |= STATUS_LAST_WAS_COMMAND;
        }
        s
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            CMD_READ_CTR => self.out.push_back(self.ctr),
            CMD_READ_OUTPUT_PORT => self.out.push_back(self.output_port),
            CMD_SELF_TEST => self.out.push_back(SELF_TEST_OK),
            CMD_KBD_TEST => self.out.push_back(PORT_TEST_OK),
            CMD_AUX_TEST => self.out.push_back(AUX_TEST_FAILED),
            CMD_WRITE_CTR
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_BUFFER
            | CMD_AUX_LOOP
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_PULSE_RESET => {
                // The VM is going away; a failed eventfd write leaves nothing to undo.
                let _ = vm_superio::Trigger::trigger(&self.reset);
            }
            // Enable/disable ports and the rest: accepted, nothing to model.
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = value,
            Some(CMD_WRITE_OUTPUT_PORT) => self.output_port = value,
            Some(CMD_WRITE_KBD_BUFFER) => self.out.push_back(value),
            // The loop answers at once, but as keyboard data rather than the AUX echo Linux
            // looks for: it concludes there is no AUX port without waiting for a timeout.
            Some(CMD_AUX_LOOP) => self.out.push_back(0),
            // Bytes for the AUX device or the keyboard: there is neither.
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => self.out.pop_front().unwrap_or(0),
            COMMAND => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            DATA => {
                self.last_was_command = false;
                self.data(value);
            }
            COMMAND => {
                self.last_was_command = true;
                self.command(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn answers_the_linux_probe_and_resets() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(EventFdTrigger(evt.try_clone().unwrap()));
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_ne!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut dev, DATA), INITIAL_CTR);
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[0x30]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA), 0x30);
        dev.write(COMMAND, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, DATA), SELF_TEST_OK);
        dev.write(COMMAND, &[CMD_AUX_LOOP]);
        dev.write(DATA, &[0x5a]);
        assert_ne!(read(&mut dev, DATA), 0x5a);
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        assert!(evt.read().is_err(), "no reset yet");
        dev.write(COMMAND, &[CMD_PULSE_RESET]);
        assert_eq!(evt.read().unwrap(), 1);
    }
}
