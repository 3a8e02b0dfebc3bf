//! virtio-vsock packets (virtio 1.2, section 5.10.6): the 44-byte header, parsing of what the
//! guest puts on the TX queue, and writing of what the device puts on the RX queue.
//! A TX packet is checked in full (header complete, type, length within the limit and within
//! the buffers actually supplied) before anything acts on it.

use std::io::{Read, Write};

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;
/// Largest payload accepted from the guest or sent to it; Linux uses 64 KiB buffers.
pub const MAX_PKT_PAYLOAD: usize = 64 * 1024;

pub const VSOCK_TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive / send no more data.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

/// The well-known CID of the host.
pub const HOST_CID: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("packet header is truncated: {0}")]
    Header(std::io::Error),
    #[error("payload length {0} exceeds the {MAX_PKT_PAYLOAD}-byte limit")]
    TooLarge(u32),
    #[error("header says {len} payload bytes, the buffers hold {available}")]
    Truncated { len: u32, available: usize },
    #[error("guest memory access failed: {0}")]
    Memory(std::io::Error),
}

/// `struct virtio_vsock_hdr`, host byte order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl PacketHeader {
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or_default());
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet the guest sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxPacket {
    pub hdr: PacketHeader,
    /// Exactly `hdr.len` bytes for RW packets, empty for the others.
    pub payload: Vec<u8>,
}

/// Reads one packet from the device-readable buffers of a TX chain. `available` is how many
/// bytes the reader holds, so the payload allocation is bounded by both the limit and the
/// guest's actual buffers.
pub fn parse_tx(reader: &mut impl Read, available: usize) -> Result<TxPacket, PacketError> {
    let mut raw = [0u8; HDR_LEN];
    reader.read_exact(&mut raw).map_err(PacketError::Header)?;
    let hdr = PacketHeader::from_bytes(&raw);
    let mut payload = Vec::new();
    if hdr.op == OP_RW {
        let len = hdr.len as usize;
        if len > MAX_PKT_PAYLOAD {
            return Err(PacketError::TooLarge(hdr.len));
        }
        let rest = available.saturating_sub(HDR_LEN);
        if len > rest {
            return Err(PacketError::Truncated {
                len: hdr.len,
                available: rest,
            });
        }
        payload.resize(len, 0);
        reader
            .read_exact(&mut payload)
            .map_err(PacketError::Memory)?;
    }
    Ok(TxPacket { hdr, payload })
}

/// Writes a header (and whatever payload the caller then writes) into an RX buffer.
pub fn write_header(writer: &mut impl Write, hdr: &PacketHeader) -> Result<(), PacketError> {
    writer
        .write_all(&hdr.to_bytes())
        .map_err(PacketError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(op: u16, len: u32) -> PacketHeader {
        PacketHeader {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1024,
            dst_port: 52,
            len,
            type_: VSOCK_TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        }
    }

    #[test]
    fn header_round_trips() {
        let h = hdr(OP_RW, 5);
        assert_eq!(PacketHeader::from_bytes(&h.to_bytes()), h);
        // Layout as in the spec: len at 24, op at 30.
        let b = h.to_bytes();
        assert_eq!(b[24], 5);
        assert_eq!(b[30], OP_RW as u8);
    }

    #[test]
    fn rw_packet_with_payload() {
        let mut bytes = hdr(OP_RW, 3).to_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let p = parse_tx(&mut &bytes[..], bytes.len()).unwrap();
        assert_eq!(p.payload, b"abc");
    }

    #[test]
    fn control_packet_ignores_len() {
        let bytes = hdr(OP_REQUEST, 1000).to_bytes();
        let p = parse_tx(&mut &bytes[..], bytes.len()).unwrap();
        assert!(p.payload.is_empty());
    }

    #[test]
    fn malformed_packets_are_rejected() {
        let bytes = hdr(OP_RW, 0).to_bytes();
        assert!(matches!(
            parse_tx(&mut &bytes[..40], 40),
            Err(PacketError::Header(_))
        ));
        let big = hdr(OP_RW, u32::MAX).to_bytes();
        assert!(matches!(
            parse_tx(&mut &big[..], HDR_LEN),
            Err(PacketError::TooLarge(_))
        ));
        let short = hdr(OP_RW, 10).to_bytes();
        assert!(matches!(
            parse_tx(&mut &short[..], HDR_LEN),
            Err(PacketError::Truncated { .. })
        ));
    }
}
