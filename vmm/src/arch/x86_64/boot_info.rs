//! What the kernel reads at entry: the PVH `hvm_start_info` (with its memory map and the
//! initrd as a module) or, for the 64-bit boot protocol, the Linux zero page.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::{e820_map, layout};

/// `hvm_start_info.magic` (Xen's PVH ABI).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;

/// Where the command line and initrd were placed.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    pub mem_bytes: u64,
    pub cmdline_len: usize,
    /// (guest address, size)
    pub initrd: Option<(u64, u64)>,
}

/// Writes the PVH start info at [`layout::PVH_INFO`]; its address goes in `rbx`.
pub fn write_pvh(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<u64, GuestMemoryError> {
    let map = e820_map(info.mem_bytes);
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: *addr,
            size: *size,
            type_: *kind as u32,
            reserved: 0,
        };
        mem.write_obj(
            entry,
            GuestAddress(layout::PVH_MEMMAP + (i * size_of::<hvm_memmap_table_entry>()) as u64),
        )?;
    }
    let mut start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        memmap_paddr: layout::PVH_MEMMAP,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = info.initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(layout::PVH_MODLIST))?;
        start.nr_modules = 1;
        start.modlist_paddr = layout::PVH_MODLIST;
    }
    mem.write_obj(start, GuestAddress(layout::PVH_INFO))?;
    Ok(layout::PVH_INFO)
}

/// Writes the zero page at [`layout::ZERO_PAGE`]; its address goes in `rsi`. `hdr` is the
/// bzImage's setup header, if the kernel is one.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
    hdr: Option<setup_header>,
) -> Result<u64, GuestMemoryError> {
    let mut params = boot_params::default();
    if let Some(hdr) = hdr {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = e820_map(info.mem_bytes);
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind as u32,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE))?;
    Ok(layout::ZERO_PAGE)
}
