//! ICMPv4 messages (RFC 792, RFC 1191 for the next-hop MTU).
//!
//! The view covers one whole ICMP message: wrap exactly the IPv4 payload,
//! since the checksum is computed over the entire buffer.

use super::checksum;
use super::{Error, Result};

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// ICMP message types used by the dataplane.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// ICMP codes used by the dataplane.
pub mod code {
    /// Destination unreachable: fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
    /// Time exceeded: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;
}

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const SEQ_NO: Range<usize> = 6..8;
    pub const REST: Range<usize> = 4..8;
    pub const UNUSED: Range<usize> = 4..6;
    pub const MTU: Range<usize> = 6..8;
    pub const DATA: usize = 8;
}

/// A view over an ICMPv4 message.
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

    /// `Truncated` if shorter than the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
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

    /// Message type (see [`msg_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code (see [`code`]).
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT.start)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn seq_no(&self) -> u16 {
        self.read_u16(field::SEQ_NO.start)
    }

    /// The whole rest-of-header word (bytes 4..8).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// Next-hop MTU of a "fragmentation needed" message (bytes 6..8).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        self.read_u16(field::MTU.start)
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the checksum over the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.write_u16(field::IDENT.start, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_seq_no(&mut self, v: u16) {
        self.write_u16(field::SEQ_NO.start, v);
    }

    /// Sets bytes 4..8 (e.g. 0 for "time exceeded").
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the next-hop MTU (bytes 6..8) and zeroes the unused bytes 4..6.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        self.buffer.as_mut()[field::UNUSED].fill(0);
        self.write_u16(field::MTU.start, mtu);
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Zeroes the checksum field, then computes it over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request, ident 0x0b3c, seq 1, 16 bytes of data.
    static ICMP_ECHO_BYTES: [u8; 24] = [
        0x08, 0x00, 0xd5, 0xde, 0x0b, 0x3c, 0x00, 0x01, 0x6b, 0x2d, 0x5f, 0x66, //
        0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    /// Fragmentation needed, next-hop MTU 1450, quoting the IPv4 header of a
    /// 1500-byte DF TCP segment 10.244.1.5:40000 -> 10.244.2.9:80 and the
    /// first 8 bytes of its payload.
    static ICMP_FRAG_NEEDED_BYTES: [u8; 36] = [
        0x03, 0x04, 0x56, 0xbb, 0x00, 0x00, 0x05, 0xaa, 0x45, 0x00, 0x05, 0xdc, //
        0x2a, 0x2a, 0x40, 0x00, 0x3f, 0x06, 0xf2, 0xfc, 0x0a, 0xf4, 0x01, 0x05, //
        0x0a, 0xf4, 0x02, 0x09, 0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04,
    ];

    #[test]
    fn echo_fields() {
        let p = Packet::new_checked(&ICMP_ECHO_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0xd5de);
        assert_eq!(p.ident(), 0x0b3c);
        assert_eq!(p.seq_no(), 1);
        assert_eq!(p.rest_of_header(), 0x0b3c_0001);
        assert_eq!(p.data(), &ICMP_ECHO_BYTES[8..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn echo_emit_matches_fixture() {
        let mut buf = [0xa5u8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(msg_type::ECHO_REQUEST);
        p.set_code(0);
        p.set_ident(0x0b3c);
        p.set_seq_no(1);
        p.data_mut().copy_from_slice(&ICMP_ECHO_BYTES[8..]);
        p.fill_checksum();
        assert_eq!(&buf[..], &ICMP_ECHO_BYTES[..]);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut buf = ICMP_ECHO_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(msg_type::ECHO_REPLY);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0xd5de + 0x0800);
    }

    #[test]
    fn frag_needed_fields() {
        let p = Packet::new_checked(&ICMP_FRAG_NEEDED_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::DEST_UNREACHABLE);
        assert_eq!(p.code(), code::FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1450);
        assert!(p.verify_checksum());
        let quoted = crate::wire::ipv4::Packet::new_unchecked(p.data());
        assert!(quoted.verify_checksum());
        assert_eq!(quoted.total_len(), 1500);
        assert_eq!(crate::wire::tcp::ports(&p.data()[20..]), Some((40000, 80)));
    }

    #[test]
    fn frag_needed_emit_matches_fixture() {
        let mut buf = [0xa5u8; 36];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(msg_type::DEST_UNREACHABLE);
        p.set_code(code::FRAG_NEEDED);
        p.set_next_hop_mtu(1450);
        p.data_mut().copy_from_slice(&ICMP_FRAG_NEEDED_BYTES[8..]);
        p.fill_checksum();
        assert_eq!(&buf[..], &ICMP_FRAG_NEEDED_BYTES[..]);
    }

    #[test]
    fn time_exceeded_rest_of_header() {
        let mut buf = [0xa5u8; 36];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_msg_type(msg_type::TIME_EXCEEDED);
        p.set_code(code::TTL_EXCEEDED);
        p.set_rest_of_header(0);
        p.data_mut().copy_from_slice(&ICMP_FRAG_NEEDED_BYTES[8..]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(&buf[..8], &[11, 0, buf[2], buf[3], 0, 0, 0, 0]);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            Packet::new_checked(&ICMP_ECHO_BYTES[..7]).unwrap_err(),
            Error::Truncated
        );
        let p = Packet::new_checked(&ICMP_ECHO_BYTES[..8]).unwrap();
        assert!(p.data().is_empty());
    }

    #[test]
    fn truncations_never_panic() {
        for fix in [&ICMP_ECHO_BYTES[..], &ICMP_FRAG_NEEDED_BYTES[..]] {
            for n in 0..=fix.len() {
                if let Ok(p) = Packet::new_checked(&fix[..n]) {
                    let _ = (p.msg_type(), p.code(), p.checksum(), p.ident(), p.seq_no());
                    let _ = (p.rest_of_header(), p.next_hop_mtu(), p.data().len());
                    let _ = p.verify_checksum();
                    let mut q = Packet::new_checked(fix[..n].to_vec()).unwrap();
                    q.set_msg_type(0);
                    q.set_code(0);
                    q.set_ident(1);
                    q.set_seq_no(2);
                    q.set_rest_of_header(3);
                    q.set_next_hop_mtu(1400);
                    q.data_mut().fill(0);
                    q.fill_checksum();
                    assert!(q.verify_checksum());
                }
            }
        }
    }
}
