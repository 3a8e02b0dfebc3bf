//! Guest memory: anonymous mappings (optionally 2 MiB huge pages, which must be reserved
//! in `/proc/sys/vm/nr_hugepages`) laid out by
//! `arch::memory_ranges`, registered with KVM one slot per range.

use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("mapping {size:#x} bytes of guest memory at {addr:#x}{huge}: {source}", huge = if *.hugepages { " on huge pages" } else { "" })]
    Mmap {
        addr: u64,
        size: usize,
        hugepages: bool,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("building the guest memory map: {0}")]
    Layout(String),
}

/// Maps `mem_bytes` of guest RAM. Pages are only touched (and so only count in the VMM's
/// RSS) when the guest or the loader writes them.
pub fn create(mem_bytes: u64, hugepages: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let flags = if hugepages {
        // Huge pages are reserved at mmap time (no MAP_NORESERVE): too few free huge pages
        // is an error here, not a fault later when the kernel image is copied in.
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB
    } else {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE
    };
    let mut regions = Vec::new();
    for (addr, size) in crate::arch::memory_ranges(mem_bytes) {
        let mapping = MmapRegion::build(None, size, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|source| MemoryError::Mmap {
                addr: addr.0,
                size,
                hugepages,
                source,
            })?;
        let region = GuestRegionMmap::new(mapping, addr)
            .ok_or_else(|| MemoryError::Layout(format!("region at {:#x} wraps", addr.0)))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))
}

/// The guest address just past the highest RAM byte.
pub fn end(mem: &GuestMemoryMmap) -> GuestAddress {
    use vm_memory::{Address, GuestMemoryBackend};
    mem.last_addr().unchecked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn maps_and_writes() {
        let mem = create(32 << 20, false).unwrap();
        assert_eq!(mem.num_regions(), 1);
        mem.write_obj(0x1234u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0x1234);
        assert_eq!(end(&mem), GuestAddress(32 << 20));
    }
}
