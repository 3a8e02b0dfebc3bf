//! Legacy PC devices on the PIO bus: the 8250 console, the i8042 (its reset line is how
//! the guest reboots), and ward's boot-time port.

pub mod boot_port;
pub mod i8042;
pub mod serial;

use vmm_sys_util::eventfd::EventFd;

/// An `EventFd` as a vm-superio interrupt or reset line.
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
