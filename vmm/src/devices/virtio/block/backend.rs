//! The host side of a virtio-blk drive: a disk image file opened read-only or read-write,
//! accessed with positioned reads and writes so requests never share a file offset.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Sector size of the virtio-blk protocol, independent of the image's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Alignment O_DIRECT transfers need; also the block size announced to the guest then.
pub const DIRECT_IO_ALIGN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot open disk image {path} ({mode}): {source}")]
    Open {
        path: PathBuf,
        mode: &'static str,
        source: std::io::Error,
    },
    #[error("cannot find the size of disk image {path}: {source}")]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An open disk image.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl DiskImage {
    /// Opens `path`; with `direct`, bypassing the host page cache (O_DIRECT), in which case
    /// every transfer must be aligned to [`DIRECT_IO_ALIGN`] in memory, offset and length.
    pub fn open(path: &Path, read_only: bool, direct: bool) -> Result<Self, BackendError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)
            .map_err(|source| BackendError::Open {
                path: path.to_owned(),
                mode: match (read_only, direct) {
                    (true, false) => "read-only",
                    (false, false) => "read-write",
                    (true, true) => "read-only, O_DIRECT",
                    (false, true) => "read-write, O_DIRECT",
                },
                source,
            })?;
        // Seeking to the end also gives the size of a block device, where metadata says 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| BackendError::Size {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_owned(),
            size,
            read_only,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size in whole sectors; a trailing partial sector is not visible to the guest.
    pub fn capacity_sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Fills `buf` from `offset`; reading past the end of a file that shrank gives zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    pub fn flush(&self) -> std::io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// Deallocates a range. Discard is a hint: a file system that cannot punch holes is fine.
    pub fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            r => r,
        }
    }

    /// Zeroes a range, deallocating it when `unmap` allows and the file system can; falls
    /// back to writing zeros.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut [u8],
    ) -> std::io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                scratch.fill(0);
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(scratch.len() as u64) as usize;
                    self.write_at(&scratch[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            r => r,
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by `self.file`
        // and stays open for the duration of the call.
        let ret = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}
