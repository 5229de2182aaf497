//! IPv4-in-IPv4 encapsulation (RFC 2003, IP protocol 4).
//!
//! The view wraps the outer IPv4 packet; checking it checks the outer header
//! with the IPv4 rules, requires protocol 4, and checks the inner IPv4
//! header (the outer payload, without any Ethernet padding) the same way.

use super::ipv4;
use super::{Error, Result};

/// Bytes added by encapsulation: one option-less IPv4 header.
pub const OVERHEAD: usize = 20;

/// A view over an outer IPv4 packet carrying an inner IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer (starting at the outer IPv4 header) without checking.
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

    /// The outer header passes `ipv4::Packet::check_len`, its protocol is
    /// 4 (else `Unsupported`), and the inner header passes it too.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let outer = ipv4::Packet::new_checked(self.buffer.as_ref())?;
        if outer.protocol() != ipv4::protocol::IPIP {
            return Err(Error::Unsupported);
        }
        ipv4::Packet::new_checked(outer.payload())?;
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The outer IPv4 packet (the whole buffer).
    #[inline]
    pub fn outer(&self) -> ipv4::Packet<&[u8]> {
        ipv4::Packet::new_unchecked(self.buffer.as_ref())
    }

    /// Offset of the inner IPv4 header: the outer header length.
    #[inline]
    pub fn inner_offset(&self) -> usize {
        self.outer().header_len()
    }

    /// The inner IPv4 packet: the outer payload, padding excluded.
    #[inline]
    pub fn inner(&self) -> ipv4::Packet<&[u8]> {
        let b = self.buffer.as_ref();
        let outer = ipv4::Packet::new_unchecked(b);
        let (start, end) = (outer.header_len(), usize::from(outer.total_len()));
        ipv4::Packet::new_unchecked(&b[start..end])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The outer IPv4 packet, mutably.
    #[inline]
    pub fn outer_mut(&mut self) -> ipv4::Packet<&mut [u8]> {
        ipv4::Packet::new_unchecked(self.buffer.as_mut())
    }

    /// The inner IPv4 packet, mutably.
    #[inline]
    pub fn inner_mut(&mut self) -> ipv4::Packet<&mut [u8]> {
        let outer = self.outer();
        let (start, end) = (outer.header_len(), usize::from(outer.total_len()));
        ipv4::Packet::new_unchecked(&mut self.buffer.as_mut()[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// 192.168.56.11 -> 192.168.56.12, IPIP, TTL 64, DF, ident 0x3e81,
    /// carrying an ICMP echo 10.244.1.5 -> 10.244.2.9 (TTL 63).
    static IPIP_BYTES: [u8; 64] = [
        0x45, 0x00, 0x00, 0x40, 0x3e, 0x81, 0x40, 0x00, 0x40, 0x04, 0x0a, 0xd1, //
        0xc0, 0xa8, 0x38, 0x0b, 0xc0, 0xa8, 0x38, 0x0c, 0x45, 0x00, 0x00, 0x2c, //
        0x5c, 0x1e, 0x40, 0x00, 0x3f, 0x01, 0xc6, 0xbd, 0x0a, 0xf4, 0x01, 0x05, //
        0x0a, 0xf4, 0x02, 0x09, 0x08, 0x00, 0xd5, 0xde, 0x0b, 0x3c, 0x00, 0x01, //
        0x6b, 0x2d, 0x5f, 0x66, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, //
        0x14, 0x15, 0x16, 0x17,
    ];

    fn outer_repr() -> ipv4::Repr {
        ipv4::Repr {
            src: Ipv4Addr::new(192, 168, 56, 11),
            dst: Ipv4Addr::new(192, 168, 56, 12),
            protocol: ipv4::protocol::IPIP,
            ttl: 64,
            payload_len: 44,
            ident: 0x3e81,
            dont_frag: true,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn fields() {
        let p = Packet::new_checked(&IPIP_BYTES[..]).unwrap();
        let outer = p.outer();
        assert!(outer.verify_checksum());
        assert_eq!(outer.protocol(), ipv4::protocol::IPIP);
        assert_eq!(outer.src_addr(), Ipv4Addr::new(192, 168, 56, 11));
        assert_eq!(outer.dst_addr(), Ipv4Addr::new(192, 168, 56, 12));
        assert_eq!(outer.total_len(), 64);
        assert_eq!(p.inner_offset(), OVERHEAD);
        let inner = p.inner();
        assert!(inner.verify_checksum());
        assert_eq!(inner.src_addr(), Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(inner.dst_addr(), Ipv4Addr::new(10, 244, 2, 9));
        assert_eq!(inner.protocol(), ipv4::protocol::ICMP);
        assert_eq!(inner.ttl(), 63);
        assert_eq!(inner.payload().len(), 24);
        assert_eq!(ipv4::Repr::parse(&outer), outer_repr());
    }

    #[test]
    fn padding_excluded_from_inner() {
        let mut padded = IPIP_BYTES.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.inner().into_inner(), &IPIP_BYTES[20..]);
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = [0xa5u8; 64];
        {
            let mut outer = ipv4::Packet::new_unchecked(&mut buf[..]);
            outer_repr().emit(&mut outer);
        }
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.outer_mut()
            .payload_mut()
            .copy_from_slice(&IPIP_BYTES[20..]);
        assert_eq!(&buf[..], &IPIP_BYTES[..]);
    }

    #[test]
    fn decrement_inner_ttl_in_place() {
        let mut buf = IPIP_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.inner_mut().decrement_ttl();
        assert_eq!(p.inner().ttl(), 62);
        assert!(p.inner().verify_checksum());
        assert!(p.outer().verify_checksum());
        p.outer_mut().decrement_ttl();
        assert_eq!(p.outer().ttl(), 63);
        assert!(p.outer().verify_checksum());
    }

    #[test]
    fn check_len_errors() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&IPIP_BYTES[..19]), Err(Error::Truncated));
        assert_eq!(check(&IPIP_BYTES[..63]), Err(Error::Truncated));

        let mut b = IPIP_BYTES;
        b[0] = 0x65;
        assert_eq!(check(&b), Err(Error::BadVersion));

        let mut b = IPIP_BYTES;
        b[9] = ipv4::protocol::UDP;
        assert_eq!(check(&b), Err(Error::Unsupported));

        let mut b = IPIP_BYTES;
        b[20] = 0x65;
        assert_eq!(check(&b), Err(Error::BadVersion));
        b[20] = 0x43;
        assert_eq!(check(&b), Err(Error::BadHeaderLen));

        // Outer total length leaves only 10 bytes of inner header.
        let mut b = IPIP_BYTES;
        b[3] = 30;
        assert_eq!(check(&b), Err(Error::Truncated));
        // Inner total length beyond the outer payload.
        let mut b = IPIP_BYTES;
        b[23] = 0x2d;
        assert_eq!(check(&b), Err(Error::Truncated));
        // Inner total length below its header.
        b[23] = 0x10;
        assert_eq!(check(&b), Err(Error::BadTotalLen));
    }

    #[test]
    fn truncations_never_panic() {
        for n in 0..=IPIP_BYTES.len() {
            if let Ok(p) = Packet::new_checked(&IPIP_BYTES[..n]) {
                let (o, i) = (p.outer(), p.inner());
                let _ = (o.payload().len(), o.options().len(), o.verify_checksum());
                let _ = (i.payload().len(), i.options().len(), i.verify_checksum());
                let _ = (i.src_addr(), i.dst_addr(), i.ttl(), p.inner_offset());
                let mut q = Packet::new_checked(IPIP_BYTES[..n].to_vec()).unwrap();
                q.inner_mut().decrement_ttl();
                q.inner_mut().payload_mut().fill(0);
                q.outer_mut().fill_checksum();
            }
        }
    }
}
