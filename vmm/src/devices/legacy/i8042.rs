//! The i8042 keyboard controller, there for one reason: `reboot=k` makes Linux pulse its
//! reset line (command 0xfe on port 0x64), which ends the VM.

use vm_superio::I8042Device;

use super::EventFdTrigger;
use crate::devices::bus::BusDevice;

/// i8042 at ports 0x60–0x64; the reset event fires on a guest reset request.
#[derive(Debug)]
pub struct I8042(pub I8042Device<EventFdTrigger>);

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 {
            data[0] = self.0.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            // The only failure is the reset eventfd write; the VM is going away anyway.
            let _ = self.0.write(offset as u8, data[0]);
        }
    }
}
