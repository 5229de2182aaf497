//! UDP datagrams (RFC 768).
//!
//! [`Packet::payload`] ends at the UDP length field, not the end of the
//! buffer. A checksum of 0 means "none" (allowed over IPv4, and what Linux
//! VXLAN sends by default).

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view over a UDP datagram.
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

    /// `Truncated` if shorter than 8 bytes; `BadTotalLen` if the length
    /// field is below 8; `Truncated` if it exceeds the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::BadTotalLen);
        }
        if field_len > len {
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

    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    /// Checksum field (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// The payload: bytes 8 to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is absent (0) or correct for this IPv4
    /// source/destination pair, over the datagram as the length field
    /// delimits it.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let s = checksum::pseudo_header_sum(src, dst, super::ipv4::protocol::UDP, len)
            + checksum::sum(data);
        !checksum::fold(s) == 0
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

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        self.write_u16(field::LENGTH.start, v);
    }

    /// Sets the checksum field (0: none).
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    /// The payload (8 to the length field), mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum with the IPv4 pseudo-header over the datagram
    /// as the length field delimits it; a computed 0 is sent as 0xffff.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let s = checksum::pseudo_header_sum(src, dst, super::ipv4::protocol::UDP, len)
            + checksum::sum(data);
        let c = !checksum::fold(s);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
    const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

    /// DNS query for "a.io" type A, 10.244.1.5:53000 -> 10.96.0.10:53.
    static UDP_DNS_BYTES: [u8; 30] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x1e, 0x94, 0x10, 0x12, 0x34, 0x01, 0x00, //
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x61, 0x02, 0x69, //
        0x6f, 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    /// The UDP part of a VXLAN packet (port 47123 -> 8472, no checksum),
    /// header and VXLAN header only.
    static VXLAN_UDP_HEADER_BYTES: [u8; 16] = [
        0xb8, 0x13, 0x21, 0x18, 0x00, 0x4a, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x01, 0x00,
    ];

    #[test]
    fn dns_fields() {
        let p = Packet::new_checked(&UDP_DNS_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 53000);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 30);
        assert_eq!(p.checksum(), 0x9410);
        assert_eq!(p.payload(), &UDP_DNS_BYTES[8..]);
        assert!(p.verify_checksum(CLIENT, DNS));
        assert!(!p.verify_checksum(CLIENT, Ipv4Addr::new(10, 96, 0, 11)));
    }

    #[test]
    fn vxlan_header_fields() {
        // Only 16 bytes: the length field (74) claims more.
        let p = Packet::new_unchecked(&VXLAN_UDP_HEADER_BYTES[..]);
        assert_eq!(p.check_len(), Err(Error::Truncated));
        assert_eq!(p.src_port(), 47123);
        assert_eq!(p.dst_port(), 8472);
        assert_eq!(p.len(), 74);
        assert_eq!(p.checksum(), 0);
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = [0xa5u8; 30];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(53000);
        p.set_dst_port(53);
        p.set_len(30);
        p.payload_mut().copy_from_slice(&UDP_DNS_BYTES[8..]);
        p.fill_checksum(CLIENT, DNS);
        assert_eq!(&buf[..], &UDP_DNS_BYTES[..]);
    }

    #[test]
    fn emit_vxlan_header_without_checksum() {
        let mut buf = [0xa5u8; 16];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_src_port(47123);
        p.set_dst_port(8472);
        p.set_len(74);
        p.set_checksum(0);
        buf[8..].copy_from_slice(&VXLAN_UDP_HEADER_BYTES[8..]);
        assert_eq!(&buf[..], &VXLAN_UDP_HEADER_BYTES[..]);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut buf = UDP_DNS_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_checksum(0);
        assert!(p.verify_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn payload_excludes_trailing_bytes() {
        let mut longer = UDP_DNS_BYTES.to_vec();
        longer.extend_from_slice(&[0; 6]);
        let p = Packet::new_checked(&longer[..]).unwrap();
        assert_eq!(p.payload(), &UDP_DNS_BYTES[8..]);
        assert!(p.verify_checksum(CLIENT, DNS));
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            Packet::new_checked(&UDP_DNS_BYTES[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = UDP_DNS_BYTES;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadTotalLen);
        b[5] = 8;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(
            Packet::new_checked(&UDP_DNS_BYTES[..29]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn truncations_never_panic() {
        for fix in [&UDP_DNS_BYTES[..], &VXLAN_UDP_HEADER_BYTES[..]] {
            for n in 0..=fix.len() {
                if let Ok(p) = Packet::new_checked(&fix[..n]) {
                    let _ = (
                        p.src_port(),
                        p.dst_port(),
                        p.len(),
                        p.checksum(),
                        p.payload().len(),
                    );
                    let _ = p.verify_checksum(CLIENT, DNS);
                    let mut q = Packet::new_checked(fix[..n].to_vec()).unwrap();
                    q.set_src_port(1);
                    q.set_dst_port(2);
                    q.set_checksum(3);
                    q.payload_mut().fill(0);
                    q.fill_checksum(CLIENT, DNS);
                    assert!(q.verify_checksum(CLIENT, DNS));
                }
            }
        }
    }
}
