//! Transports that expose a [`super::VirtioDevice`] to the guest. ward only needs virtio-mmio:
//! no PCI, no ACPI (see DESIGN.md, "Fixed points").

pub mod mmio;

pub use mmio::{MMIO_LEN, MmioTransport, NOTIFY_REG_OFFSET};
