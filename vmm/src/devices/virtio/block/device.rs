//! The virtio-blk device: configuration space, request execution against the disk image, and
//! the backing-file swap that lets container layers arrive after boot (empty slot → image,
//! or image → another image) with a config-change interrupt so the guest rereads the size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, QueueT, Reader, Writer};

use super::backend::{BackendError, DIRECT_IO_ALIGN, DiskImage, SECTOR_SIZE};
use super::request::{
    MAX_SEGMENT_SECTORS, MAX_SEGMENTS, RequestError, RequestType, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_OK, check_range, parse_header, parse_segments,
};
use crate::devices::virtio::metrics::DeviceMetrics;
use crate::devices::virtio::queue::{add_used, notify_guest};
use crate::devices::virtio::{
    DeviceState, GuestMemory, VirtioDevice, VirtioError, device_type, features, read_config_bytes,
};

/// Feature bits of virtio-blk (virtio 1.2, section 5.2.3).
pub mod blk_features {
    pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
    pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
    pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
    pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
    pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
    pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;
}
use blk_features::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};

/// Descriptors per queue; also what the driver may put in one chain.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request announced in seg_max (two descriptors go to header and status).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bounce buffer size: file I/O moves at most this much per system call.
const CHUNK: usize = 128 * 1024;
/// Size of `struct virtio_blk_config` up to and including write_zeroes_may_unmap.
const CONFIG_LEN: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("drive {drive}: {source}")]
    Backend { drive: String, source: BackendError },
    #[error("drive {drive}: serial {serial:?} is longer than {VIRTIO_BLK_ID_BYTES} bytes")]
    SerialTooLong { drive: String, serial: String },
    #[error("drive {drive}: {source}")]
    Virtio { drive: String, source: VirtioError },
}

/// How the VMM creates a drive slot.
#[derive(Debug, Clone, Default)]
pub struct BlockConfig {
    /// The API's name for the drive (`/drives/{id}`).
    pub drive_id: String,
    /// Disk image; `None` for an empty slot that an image is attached to later.
    pub path: Option<PathBuf>,
    /// Fixed for the slot's lifetime: the guest negotiates VIRTIO_BLK_F_RO once, at boot.
    pub read_only: bool,
    /// Returned by GET_ID (at most 20 bytes); the agent finds layers by it.
    pub serial: Option<String>,
    /// Open images with O_DIRECT. The guest is then told to use 4 KiB blocks; a request that
    /// is not 4 KiB aligned anyway fails with IOERR.
    pub direct_io: bool,
}

/// A virtio-blk drive.
#[derive(Debug)]
pub struct Block {
    drive_id: String,
    read_only: bool,
    direct_io: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES],
    disk: Option<DiskImage>,
    state: DeviceState,
    metrics: Arc<DeviceMetrics>,
    buf: Vec<u8>,
}

fn serial_bytes(
    drive: &str,
    serial: Option<&str>,
) -> Result<[u8; VIRTIO_BLK_ID_BYTES], BlockError> {
    let mut out = [0u8; VIRTIO_BLK_ID_BYTES];
    if let Some(s) = serial {
        if s.len() > VIRTIO_BLK_ID_BYTES {
            return Err(BlockError::SerialTooLong {
                drive: drive.to_owned(),
                serial: s.to_owned(),
            });
        }
        out[..s.len()].copy_from_slice(s.as_bytes());
    }
    Ok(out)
}

impl Block {
    pub fn new(config: BlockConfig) -> Result<Self, BlockError> {
        let drive = config.drive_id.clone();
        let serial = serial_bytes(&drive, config.serial.as_deref())?;
        let disk = config
            .path
            .as_deref()
            .map(|p| DiskImage::open(p, config.read_only, config.direct_io))
            .transpose()
            .map_err(|source| BlockError::Backend {
                drive: drive.clone(),
                source,
            })?;
        let mut avail = features::VIRTIO_RING_F_INDIRECT_DESC
            | features::VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_SEG_MAX;
        if config.direct_io {
            avail |= VIRTIO_BLK_F_BLK_SIZE;
        }
        avail |= if config.read_only {
            VIRTIO_BLK_F_RO
        } else {
            VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES
        };
        let state =
            DeviceState::new(avail, &[QUEUE_SIZE]).map_err(|source| BlockError::Virtio {
                drive: drive.clone(),
                source,
            })?;
        Ok(Self {
            drive_id: config.drive_id,
            read_only: config.read_only,
            direct_io: config.direct_io,
            serial,
            disk,
            state,
            metrics: Arc::new(DeviceMetrics::default()),
            buf: vec![0; CHUNK + DIRECT_IO_ALIGN],
        })
    }

    pub fn drive_id(&self) -> &str {
        &self.drive_id
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Path of the attached image, `None` for an empty slot.
    pub fn path(&self) -> Option<&Path> {
        self.disk.as_ref().map(DiskImage::path)
    }

    /// Disk size in sectors as the guest sees it.
    pub fn capacity(&self) -> u64 {
        self.disk.as_ref().map_or(0, DiskImage::capacity_sectors)
    }

    pub fn metrics(&self) -> Arc<DeviceMetrics> {
        self.metrics.clone()
    }

    /// Attaches `path` (or empties the slot with `None`) and sets the GET_ID serial, then
    /// raises a config-change interrupt so the guest picks up the new capacity. On error the
    /// previous image stays attached.
    pub fn swap_backend(
        &mut self,
        path: Option<&Path>,
        serial: Option<&str>,
    ) -> Result<(), BlockError> {
        let serial = serial_bytes(&self.drive_id, serial)?;
        let disk = path
            .map(|p| DiskImage::open(p, self.read_only, self.direct_io))
            .transpose()
            .map_err(|source| BlockError::Backend {
                drive: self.drive_id.clone(),
                source,
            })?;
        if let Some(old) = &self.disk {
            // Whatever the guest wrote must reach the old image before it is let go.
            if let Err(e) = old.flush() {
                log::warn!(
                    "drive {}: flush of {} failed: {e}",
                    self.drive_id,
                    old.path().display()
                );
            }
        }
        self.disk = disk;
        self.serial = serial;
        self.state.signal_config_change();
        Ok(())
    }

    fn config_bytes(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[0..8].copy_from_slice(&self.capacity().to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        let blk_size = if self.direct_io {
            DIRECT_IO_ALIGN as u32
        } else {
            SECTOR_SIZE as u32
        };
        c[20..24].copy_from_slice(&blk_size.to_le_bytes());
        if !self.read_only {
            c[36..40].copy_from_slice(&MAX_SEGMENT_SECTORS.to_le_bytes());
            c[40..44].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
            c[44..48].copy_from_slice(&1u32.to_le_bytes());
            c[48..52].copy_from_slice(&MAX_SEGMENT_SECTORS.to_le_bytes());
            c[52..56].copy_from_slice(&MAX_SEGMENTS.to_le_bytes());
            c[56] = 1;
        }
        c
    }

    /// Runs one request and returns the number of bytes written into guest buffers.
    fn execute(&mut self, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> u32 {
        DeviceMetrics::inc(&self.metrics.requests);
        let parts = chain
            .clone()
            .reader(mem)
            .and_then(|r| chain.writer(mem).map(|w| (r, w)));
        let (mut reader, mut writer) = match parts {
            Ok(p) => p,
            Err(e) => {
                // Without valid buffers there is nowhere to put a status: drop the request.
                self.fail(&RequestError::Chain(e.to_string()));
                return 0;
            }
        };
        let Some(status_at) = writer.available_bytes().checked_sub(1) else {
            self.fail(&RequestError::NoStatus);
            return 0;
        };
        let Ok(mut status_writer) = writer.split_at(status_at) else {
            self.fail(&RequestError::NoStatus);
            return 0;
        };
        let status = match self.handle(&mut reader, &mut writer) {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(e) => {
                self.fail(&e);
                e.status()
            }
        };
        if status_writer.write_all(&[status]).is_err() {
            self.fail(&RequestError::NoStatus);
        }
        (writer.bytes_written() + status_writer.bytes_written()) as u32
    }

    /// The bounce buffer, aligned for O_DIRECT.
    fn bounce(buf: &mut [u8]) -> &mut [u8] {
        let off = buf
            .as_ptr()
            .align_offset(DIRECT_IO_ALIGN)
            .min(DIRECT_IO_ALIGN);
        &mut buf[off..off + CHUNK]
    }

    fn fail(&self, e: &RequestError) {
        DeviceMetrics::inc(&self.metrics.errors);
        log::debug!("drive {}: request failed: {e}", self.drive_id);
    }

    fn handle(
        &mut self,
        reader: &mut Reader<'_>,
        writer: &mut Writer<'_>,
    ) -> Result<(), RequestError> {
        let hdr = parse_header(reader)?;
        match RequestType::from(hdr.request_type) {
            RequestType::In => {
                let disk = self.disk.as_ref().ok_or(RequestError::NoMedium)?;
                let len = writer.available_bytes() as u64;
                let mut offset = check_range(hdr.sector, len, disk.capacity_sectors())?;
                let bounce = Self::bounce(&mut self.buf);
                while writer.available_bytes() > 0 {
                    let n = writer.available_bytes().min(bounce.len());
                    let chunk = &mut bounce[..n];
                    disk.read_at(chunk, offset)
                        .map_err(|source| RequestError::Io { op: "read", source })?;
                    writer.write_all(chunk).map_err(RequestError::Memory)?;
                    offset += n as u64;
                }
                DeviceMetrics::add(&self.metrics.read_bytes, len);
                Ok(())
            }
            RequestType::Out => {
                let disk = self.disk.as_ref().ok_or(RequestError::NoMedium)?;
                if self.read_only || disk.read_only() {
                    return Err(RequestError::ReadOnly);
                }
                let len = reader.available_bytes() as u64;
                let mut offset = check_range(hdr.sector, len, disk.capacity_sectors())?;
                let bounce = Self::bounce(&mut self.buf);
                while reader.available_bytes() > 0 {
                    let n = reader.available_bytes().min(bounce.len());
                    let chunk = &mut bounce[..n];
                    std::io::Read::read_exact(reader, chunk).map_err(RequestError::Memory)?;
                    disk.write_at(chunk, offset)
                        .map_err(|source| RequestError::Io {
                            op: "write",
                            source,
                        })?;
                    offset += n as u64;
                }
                DeviceMetrics::add(&self.metrics.write_bytes, len);
                Ok(())
            }
            RequestType::Flush => match &self.disk {
                Some(disk) => disk.flush().map_err(|source| RequestError::Io {
                    op: "flush",
                    source,
                }),
                None => Ok(()),
            },
            RequestType::GetId => {
                let n = writer.available_bytes().min(VIRTIO_BLK_ID_BYTES);
                writer
                    .write_all(&self.serial[..n])
                    .map_err(RequestError::Memory)
            }
            t @ (RequestType::Discard | RequestType::WriteZeroes) => {
                let disk = self.disk.as_ref().ok_or(RequestError::NoMedium)?;
                if self.read_only || disk.read_only() {
                    return Err(RequestError::ReadOnly);
                }
                let zeroes = t == RequestType::WriteZeroes;
                let available = reader.available_bytes();
                let segments = parse_segments(reader, available, disk.capacity_sectors(), zeroes)?;
                for s in segments {
                    let (offset, len) = (
                        s.sector * SECTOR_SIZE,
                        u64::from(s.num_sectors) * SECTOR_SIZE,
                    );
                    let r = if zeroes {
                        disk.write_zeroes(offset, len, s.unmap(), Self::bounce(&mut self.buf))
                    } else {
                        disk.discard(offset, len)
                    };
                    r.map_err(|source| RequestError::Io {
                        op: if zeroes { "write-zeroes" } else { "discard" },
                        source,
                    })?;
                }
                Ok(())
            }
            RequestType::Unsupported(t) => Err(RequestError::Unsupported(t)),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn state(&self) -> &DeviceState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut DeviceState {
        &mut self.state
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The writeback toggle is not offered (CONFIG_WCE); nothing else is writable.
        log::debug!(
            "drive {}: ignoring config write at {offset:#x}",
            self.drive_id
        );
    }

    fn process_queue(&mut self, index: usize) {
        if index != 0 {
            return;
        }
        let Some(mem) = self.state.mem.clone() else {
            return;
        };
        if !self.state.queues[0].ready() {
            return;
        }
        let mut used_any = false;
        loop {
            // With EVENT_IDX, suppress notifications while draining, then re-check once
            // re-enabled so a request added in between is not missed.
            if let Err(e) = self.state.queues[0].disable_notification(&mem) {
                log::warn!("drive {}: {e}", self.drive_id);
                break;
            }
            let mut popped = false;
            while let Some(chain) = self.state.queues[0].pop_descriptor_chain(&mem) {
                popped = true;
                let head = chain.head_index();
                let len = self.execute(&mem, chain);
                used_any |= add_used(&mut self.state.queues[0], &mem, head, len);
            }
            // A driver whose avail index runs more than a ring ahead yields no chain but
            // always "has more": only go round again if this round made progress.
            match self.state.queues[0].enable_notification(&mem) {
                Ok(true) if popped => {}
                Ok(_) => break,
                Err(e) => {
                    log::warn!("drive {}: {e}", self.drive_id);
                    break;
                }
            }
        }
        if used_any {
            let irq = self.state.irq.clone();
            notify_guest(&mut self.state.queues[0], &mem, &irq);
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
