//! Parsing of virtio-blk requests (virtio 1.2, section 5.2.6). Everything here comes from the
//! guest: a request is checked completely (type, alignment, range, segment count) before any
//! byte of the disk image is touched.

use std::io::Read;

use vm_memory::ByteValued;

use super::backend::SECTOR_SIZE;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Length of the GET_ID answer.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;
/// Discard and write-zeroes segments per request the device accepts (config space).
pub const MAX_SEGMENTS: u32 = 32;
/// Sectors per discard or write-zeroes segment (config space): 1 GiB.
pub const MAX_SEGMENT_SECTORS: u32 = 1 << 21;
const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// `struct virtio_blk_req` without its data and status.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct RequestHeader {
    pub request_type: u32,
    pub reserved: u32,
    pub sector: u64,
}

// SAFETY: plain integers, no padding (4 + 4 + 8 bytes, 8-aligned), any bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}

/// `struct virtio_blk_discard_write_zeroes`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub sector: u64,
    pub num_sectors: u32,
    pub flags: u32,
}

// SAFETY: plain integers, no padding (8 + 4 + 4 bytes), any bit pattern is valid.
unsafe impl ByteValued for Segment {}

impl Segment {
    pub fn unmap(&self) -> bool {
        self.flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0
    }
}

/// What the guest asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => Self::In,
            VIRTIO_BLK_T_OUT => Self::Out,
            VIRTIO_BLK_T_FLUSH => Self::Flush,
            VIRTIO_BLK_T_GET_ID => Self::GetId,
            VIRTIO_BLK_T_DISCARD => Self::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => Self::WriteZeroes,
            other => Self::Unsupported(other),
        }
    }
}

/// Why a request failed; each maps to the status byte the guest sees.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("descriptor chain has no device-writable byte for the status")]
    NoStatus,
    #[error("descriptor chain is invalid: {0}")]
    Chain(String),
    #[error("request header is truncated: {0}")]
    Header(std::io::Error),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("data length {len} is not a multiple of {SECTOR_SIZE}")]
    Unaligned { len: u64 },
    #[error("sectors {sector}+{sectors} lie beyond the disk's {capacity} sectors")]
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("write to a read-only drive")]
    ReadOnly,
    #[error("no disk image in this drive")]
    NoMedium,
    #[error("{0} segments, the device accepts 1 to {MAX_SEGMENTS}, each of whole 16 bytes")]
    Segments(usize),
    #[error("segment of {0} sectors exceeds {MAX_SEGMENT_SECTORS}")]
    SegmentTooLarge(u32),
    #[error("segment flags {0:#x} not supported")]
    SegmentFlags(u32),
    #[error("guest memory access failed: {0}")]
    Memory(std::io::Error),
    #[error("disk image {op} failed: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
}

impl RequestError {
    pub fn status(&self) -> u8 {
        match self {
            Self::Unsupported(_) | Self::SegmentFlags(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// Reads the request header from the device-readable part of the chain.
pub fn parse_header(reader: &mut impl Read) -> Result<RequestHeader, RequestError> {
    let mut hdr = RequestHeader::default();
    reader
        .read_exact(hdr.as_mut_slice())
        .map_err(RequestError::Header)?;
    hdr.request_type = u32::from_le(hdr.request_type);
    hdr.sector = u64::from_le(hdr.sector);
    Ok(hdr)
}

/// Checks that `len` bytes from `sector` are whole sectors inside a disk of `capacity` sectors,
/// and returns the byte offset.
pub fn check_range(sector: u64, len: u64, capacity: u64) -> Result<u64, RequestError> {
    if len % SECTOR_SIZE != 0 {
        return Err(RequestError::Unaligned { len });
    }
    let sectors = len / SECTOR_SIZE;
    match (sector.checked_add(sectors), sector.checked_mul(SECTOR_SIZE)) {
        (Some(end), Some(offset)) if end <= capacity => Ok(offset),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

/// Reads the discard / write-zeroes segments that make up the rest of the readable part.
/// `available` is what the reader still holds, so nothing is allocated beyond the limit.
pub fn parse_segments(
    reader: &mut impl Read,
    available: usize,
    capacity: u64,
    allow_unmap_flag: bool,
) -> Result<Vec<Segment>, RequestError> {
    let size = std::mem::size_of::<Segment>();
    let count = available / size;
    if available % size != 0 || count == 0 || count > MAX_SEGMENTS as usize {
        return Err(RequestError::Segments(count));
    }
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = Segment::default();
        reader
            .read_exact(s.as_mut_slice())
            .map_err(RequestError::Memory)?;
        s.sector = u64::from_le(s.sector);
        s.num_sectors = u32::from_le(s.num_sectors);
        s.flags = u32::from_le(s.flags);
        let allowed = if allow_unmap_flag {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if s.flags & !allowed != 0 {
            return Err(RequestError::SegmentFlags(s.flags));
        }
        if s.num_sectors > MAX_SEGMENT_SECTORS {
            return Err(RequestError::SegmentTooLarge(s.num_sectors));
        }
        check_range(s.sector, u64::from(s.num_sectors) * SECTOR_SIZE, capacity)?;
        segments.push(s);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(t: u32, sector: u64) -> Vec<u8> {
        let mut v = t.to_le_bytes().to_vec();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&sector.to_le_bytes());
        v
    }

    #[test]
    fn header_is_parsed_little_endian() {
        let h = parse_header(&mut &header_bytes(VIRTIO_BLK_T_OUT, 0x1234)[..]).unwrap();
        assert_eq!(RequestType::from(h.request_type), RequestType::Out);
        assert_eq!(h.sector, 0x1234);
    }

    #[test]
    fn truncated_header_is_an_ioerr() {
        let e = parse_header(&mut &[0u8; 15][..]).unwrap_err();
        assert_eq!(e.status(), VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn unknown_type_is_unsupported() {
        assert_eq!(RequestType::from(99), RequestType::Unsupported(99));
        assert_eq!(RequestError::Unsupported(99).status(), VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert_eq!(check_range(2, 1024, 4).unwrap(), 1024);
        assert!(check_range(3, 1024, 4).is_err());
        assert!(check_range(0, 100, 4).is_err());
        assert!(check_range(u64::MAX, 512, u64::MAX).is_err());
        assert!(check_range(u64::MAX / 512, 0, u64::MAX).is_ok());
        assert!(check_range(u64::MAX, 0, u64::MAX).is_err());
    }

    fn segment_bytes(sector: u64, n: u32, flags: u32) -> Vec<u8> {
        let mut v = sector.to_le_bytes().to_vec();
        v.extend_from_slice(&n.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v
    }

    #[test]
    fn segments_are_validated() {
        let one = segment_bytes(1, 2, 0);
        let s = parse_segments(&mut &one[..], one.len(), 8, false).unwrap();
        assert_eq!(
            s,
            vec![Segment {
                sector: 1,
                num_sectors: 2,
                flags: 0
            }]
        );
        // Empty, partial, too many, out of range, bad flags.
        assert!(parse_segments(&mut &[][..], 0, 8, false).is_err());
        assert!(parse_segments(&mut &one[..15], 15, 8, false).is_err());
        let many = one.repeat(MAX_SEGMENTS as usize + 1);
        assert!(parse_segments(&mut &many[..], many.len(), 8, false).is_err());
        let far = segment_bytes(7, 2, 0);
        assert!(parse_segments(&mut &far[..], 16, 8, false).is_err());
        let unmap = segment_bytes(1, 1, 1);
        assert!(parse_segments(&mut &unmap[..], 16, 8, true).is_ok());
        let e = parse_segments(&mut &unmap[..], 16, 8, false).unwrap_err();
        assert_eq!(e.status(), VIRTIO_BLK_S_UNSUPP);
    }
}
