//! Address-range dispatch for PIO and MMIO exits.
//!
//! A vCPU that exits on an access looks the address up here and hands the device the offset
//! inside its range. Devices are shared between vCPU threads and the event loop, hence
//! `Arc<Mutex<…>>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device mapped at a range of port or memory addresses.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} is empty or wraps around")]
    InvalidRange { base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}+{other_len:#x}")]
    Overlap {
        base: u64,
        len: u64,
        other: u64,
        other_len: u64,
    },
}

/// Shared handle to a device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Non-overlapping address ranges, each owned by one device.
#[derive(Default, Clone)]
pub struct Bus {
    /// base → (len, device)
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.ranges.iter().map(|(b, (l, _))| (*b, *l)))
            .finish()
    }
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::InvalidRange { base, len });
        }
        let end = base + len;
        // The nearest range starting below `end` is the only one that can overlap.
        if let Some((&other, &(other_len, _))) = self.ranges.range(..end).next_back() {
            if other + other_len > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other,
                    other_len,
                });
            }
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    /// The device covering `addr`, with `addr`'s offset inside it.
    pub fn resolve(&self, addr: u64) -> Option<(&SharedDevice, u64)> {
        let (&base, (len, device)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < *len).then_some((device, addr - base))
    }

    /// Dispatches a read; `false` when no device is mapped at `addr` (data is left as is).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr) else {
            return false;
        };
        device
            .lock()
            .expect("bus device lock poisoned")
            .read(offset, data);
        true
    }

    /// Dispatches a write; `false` when no device is mapped at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr) else {
            return false;
        };
        device
            .lock()
            .expect("bus device lock poisoned")
            .write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with the offset.
    #[derive(Default)]
    struct Probe {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let probe = Arc::new(Mutex::new(Probe::default()));
        bus.insert(probe.clone(), 0x3f8, 8).unwrap();
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fd, &mut buf));
        assert_eq!(buf, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(probe.lock().unwrap().last, Some((0, vec![0x41])));
        assert!(!bus.read(0x400, &mut buf));
        assert!(!bus.write(0x3f7, &[0]));
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let dev = || Arc::new(Mutex::new(Probe::default()));
        bus.insert(dev(), 0x1000, 0x100).unwrap();
        assert!(matches!(
            bus.insert(dev(), 0x10ff, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), 0xf00, 0x101),
            Err(BusError::Overlap { .. })
        ));
        assert_eq!(
            bus.insert(dev(), 0, 0),
            Err(BusError::InvalidRange { base: 0, len: 0 })
        );
        assert!(bus.insert(dev(), u64::MAX, 2).is_err());
        bus.insert(dev(), 0x1100, 0x100).unwrap();
        bus.insert(dev(), 0xf00, 0x100).unwrap();
    }
}
