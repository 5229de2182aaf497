//! TCP headers (RFC 9293), as far as the dataplane needs them: ports,
//! sequence numbers, flags and the header length.

use super::{Error, Result};

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// Bits of the [`Packet::flags`] byte.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// The source and destination ports at the start of a TCP or UDP header,
/// if `l4` holds at least 4 bytes.
#[inline]
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    match l4 {
        [a, b, c, d, ..] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// A view over a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks it (see [`Packet::check_len`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if shorter than 20 bytes; `BadHeaderLen` if the data
    /// offset is below 5; `Truncated` if the header exceeds the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn read_u16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[inline]
    fn read_u32(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT.start)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        self.read_u32(field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        self.read_u32(field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Receive window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        self.read_u16(field::WINDOW.start)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// Options: bytes 20 to the header length.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        self.write_u16(field::SRC_PORT.start, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        self.write_u16(field::DST_PORT.start, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum;
    use std::net::Ipv4Addr;

    /// SYN 10.244.1.5:40000 -> 10.244.2.9:80, seq 0x01020304, window 64240,
    /// options MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    static TCP_SYN_BYTES: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, //
        0xa0, 0x02, 0xfa, 0xf0, 0xb1, 0x41, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, //
        0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, //
        0x01, 0x03, 0x03, 0x07,
    ];

    #[test]
    fn syn_fields() {
        let p = Packet::new_checked(&TCP_SYN_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.checksum(), 0xb141);
        assert_eq!(p.options().len(), 20);
        assert_eq!(&p.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
        assert!(p.payload().is_empty());
        // The fixture's checksum is right for its addresses.
        let src = Ipv4Addr::new(10, 244, 1, 5);
        let dst = Ipv4Addr::new(10, 244, 2, 9);
        let s = checksum::pseudo_header_sum(src, dst, 6, 40) + checksum::sum(&TCP_SYN_BYTES);
        assert_eq!(!checksum::fold(s), 0);
    }

    #[test]
    fn set_ports() {
        let mut buf = TCP_SYN_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_src_port(1234);
        p.set_dst_port(8080);
        p.set_checksum(0xbeef);
        assert_eq!(
            (p.src_port(), p.dst_port(), p.checksum()),
            (1234, 8080, 0xbeef)
        );
        assert_eq!(&buf[..4], &[0x04, 0xd2, 0x1f, 0x90]);
        assert_eq!(&buf[4..16], &TCP_SYN_BYTES[4..16]);
        assert_eq!(&buf[18..], &TCP_SYN_BYTES[18..]);
    }

    #[test]
    fn ports_helper() {
        assert_eq!(ports(&TCP_SYN_BYTES), Some((40000, 80)));
        assert_eq!(ports(&TCP_SYN_BYTES[..4]), Some((40000, 80)));
        assert_eq!(ports(&TCP_SYN_BYTES[..3]), None);
        assert_eq!(ports(&[]), None);
        // Same layout for UDP.
        assert_eq!(
            ports(&[0xcf, 0x08, 0x00, 0x35, 0x00, 0x1e]),
            Some((53000, 53))
        );
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            Packet::new_checked(&TCP_SYN_BYTES[..19]).unwrap_err(),
            Error::Truncated
        );
        let mut b = TCP_SYN_BYTES;
        b[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        b[12] = 0x00;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        b[12] = 0x50;
        let p = Packet::new_checked(&b[..20]).unwrap();
        assert!(p.options().is_empty() && p.payload().is_empty());
        assert_eq!(
            Packet::new_checked(&TCP_SYN_BYTES[..39]).unwrap_err(),
            Error::Truncated
        );
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn truncations_never_panic() {
        for n in 0..=TCP_SYN_BYTES.len() {
            if let Ok(p) = Packet::new_checked(&TCP_SYN_BYTES[..n]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
                let _ = (p.header_len(), p.flags(), p.window_len(), p.checksum());
                let _ = (p.options().len(), p.payload().len());
                let mut q = Packet::new_checked(TCP_SYN_BYTES[..n].to_vec()).unwrap();
                q.set_src_port(1);
                q.set_dst_port(2);
                q.set_checksum(3);
            }
        }
    }
}
