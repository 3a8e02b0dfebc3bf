//! Putting a Linux kernel, its initrd and its command line into guest memory (linux-loader),
//! and picking the entry protocol: PVH when the vmlinux has the PVH note, the 64-bit boot
//! protocol otherwise (vmlinux without the note, or a bzImage).

use std::fs::File;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::arch::layout;
use crate::arch::x86_64::regs::BootProtocol;

/// Offset of the 64-bit entry (`startup_64`) in a loaded bzImage's protected-mode kernel.
const BZIMAGE_64BIT_ENTRY: u64 = 0x200;
const PAGE: u64 = 0x1000;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("opening {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("kernel {path} is neither a vmlinux ELF ({elf}) nor a bzImage ({bzimage})")]
    Kernel {
        path: String,
        elf: linux_loader::loader::Error,
        bzimage: linux_loader::loader::Error,
    },
    #[error(
        "initrd {path} ({size} bytes) does not fit between the kernel's end at {kernel_end:#x} \
         and {top:#x}"
    )]
    InitrdTooBig {
        path: String,
        size: u64,
        kernel_end: u64,
        top: u64,
    },
    #[error("loading initrd {path} at {addr:#x}: {source}")]
    InitrdLoad {
        path: String,
        addr: u64,
        source: vm_memory::GuestMemoryError,
    },
    #[error("kernel command line {cmdline:?}: {source}")]
    Cmdline {
        cmdline: String,
        source: linux_loader::cmdline::Error,
    },
    #[error("writing the kernel command line: {0}")]
    CmdlineLoad(linux_loader::loader::Error),
}

/// Where the kernel landed and how to enter it.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: u64,
    pub protocol: BootProtocol,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
}

fn open(what: &'static str, path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| BootError::Open {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Loads a vmlinux ELF (PVH entry if it has one) or a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let mut file = open("kernel", path)?;
    let himem = Some(GuestAddress(layout::HIMEM));
    let elf = match Elf::load(mem, None, &mut file, himem) {
        Ok(res) => {
            let (entry, protocol) = match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => (addr.0, BootProtocol::Pvh),
                _ => (res.kernel_load.0, BootProtocol::Linux64),
            };
            return Ok(LoadedKernel {
                entry,
                protocol,
                end: res.kernel_end,
                setup_header: None,
            });
        }
        Err(e) => e,
    };
    match BzImage::load(mem, None, &mut file, himem) {
        Ok(res) => Ok(LoadedKernel {
            entry: res.kernel_load.0 + BZIMAGE_64BIT_ENTRY,
            protocol: BootProtocol::Linux64,
            end: res.kernel_end,
            setup_header: res.setup_header,
        }),
        Err(bzimage) => Err(BootError::Kernel {
            path: path.display().to_string(),
            elf,
            bzimage,
        }),
    }
}

/// Loads the initrd at the top of low memory (below the bzImage's `initrd_addr_max`, when
/// it has one), page-aligned; returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<(u64, u64), BootError> {
    let mut file = open("initrd", path)?;
    let size = file
        .metadata()
        .map_err(|source| BootError::Open {
            what: "initrd",
            path: path.display().to_string(),
            source,
        })?
        .len();
    let low_end = crate::arch::low_mem_end(mem.last_addr().0 + 1);
    let top = match kernel.setup_header {
        Some(h) if h.initrd_addr_max != 0 => low_end.min(u64::from(h.initrd_addr_max) + 1),
        _ => low_end,
    };
    let too_big = || BootError::InitrdTooBig {
        path: path.display().to_string(),
        size,
        kernel_end: kernel.end,
        top,
    };
    let addr = top.checked_sub(size).ok_or_else(too_big)? & !(PAGE - 1);
    if addr < kernel.end {
        return Err(too_big());
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| BootError::InitrdLoad {
            path: path.display().to_string(),
            addr,
            source,
        })?;
    Ok((addr, size))
}

/// Parses the base command line (devices append to it later).
pub fn cmdline(base: &str) -> Result<Cmdline, BootError> {
    Cmdline::try_from(base, layout::CMDLINE_MAX).map_err(|source| BootError::Cmdline {
        cmdline: base.to_owned(),
        source,
    })
}

/// Writes the final command line at [`layout::CMDLINE`]; returns its length.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, BootError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(layout::CMDLINE), cmdline)
        .map_err(BootError::CmdlineLoad)?;
    Ok(cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or_default())
}
