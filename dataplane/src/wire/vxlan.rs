//! VXLAN headers (RFC 7348).
//!
//! ```text
//! |R|R|R|R|I|R|R|R|            Reserved (24)                      |
//! |                VXLAN Network Identifier (24)  | Reserved (8)  |
//! ```
//!
//! Reserved bits are ignored on receipt and written as zero, as the RFC
//! says; only the I flag is required.

use super::{Error, Result};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The UDP port the Linux kernel (and flannel) uses by default.
pub const DEFAULT_PORT_LINUX: u16 = 8472;
/// The IANA-assigned UDP port.
pub const IANA_PORT: u16 = 4789;
/// Bytes added by encapsulation: outer Ethernet 14 + IPv4 20 + UDP 8 +
/// VXLAN 8.
pub const OVERHEAD: usize = 50;

/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

mod field {
    use core::ops::Range;

    pub const FLAGS: usize = 0;
    pub const RESERVED1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: usize = 8;
}

/// A view over a VXLAN header and the Ethernet frame it carries.
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

    /// `Truncated` if shorter than 8 bytes; `BadFlags` without the I flag.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.flags() & FLAG_I == 0 {
            return Err(Error::BadFlags);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        let i = field::VNI.start;
        u32::from_be_bytes([0, b[i], b[i + 1], b[i + 2]])
    }

    /// The encapsulated Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the VNI (24 bits) and zeroes the reserved byte 7.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        debug_assert!(vni <= MAX_VNI, "VNI {vni} exceeds 24 bits");
        let [_, a, b, c] = vni.to_be_bytes();
        let buf = self.buffer.as_mut();
        buf[field::VNI].copy_from_slice(&[a, b, c]);
        buf[field::RESERVED2] = 0;
    }

    /// Writes a complete header: flags I, reserved zero, `vni`.
    #[inline]
    pub fn emit_header(&mut self, vni: u32) {
        self.set_flags(FLAG_I);
        self.buffer.as_mut()[field::RESERVED1].fill(0);
        self.set_vni(vni);
    }

    /// The encapsulated Ethernet frame, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ethernet, ipv4, udp};

    /// Flannel-style VXLAN: 192.168.56.11 -> 192.168.56.12, UDP 47123 ->
    /// 8472, VNI 1, carrying 4e:1f:7a:00:2c:91 -> ee:a1:b2:c3:d4:e5 with an
    /// ICMP echo 10.244.1.5 -> 10.244.2.9.
    static VXLAN_FRAME_BYTES: [u8; 108] = [
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x5e, 0x7a, 0x2b, 0x40, 0x00, 0x40, 0x11, //
        0xce, 0xfb, 0xc0, 0xa8, 0x38, 0x0b, 0xc0, 0xa8, 0x38, 0x0c, 0xb8, 0x13, //
        0x21, 0x18, 0x00, 0x4a, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x01, 0x00, 0xee, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0x4e, 0x1f, 0x7a, 0x00, //
        0x2c, 0x91, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2c, 0x5c, 0x1e, 0x40, 0x00, //
        0x3f, 0x01, 0xc6, 0xbd, 0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x09, //
        0x08, 0x00, 0xd5, 0xde, 0x0b, 0x3c, 0x00, 0x01, 0x6b, 0x2d, 0x5f, 0x66, //
        0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    /// Offset of the VXLAN header in the frame: 14 + 20 + 8.
    const VXLAN_AT: usize = 42;

    #[test]
    fn overhead_is_sum_of_headers() {
        assert_eq!(
            OVERHEAD,
            ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + HEADER_LEN
        );
        assert_eq!(VXLAN_FRAME_BYTES.len() - OVERHEAD, 58);
    }

    #[test]
    fn decap_whole_frame() {
        let eth = ethernet::Frame::new_checked(&VXLAN_FRAME_BYTES[..]).unwrap();
        assert_eq!(eth.ethertype(), ethernet::ethertype::IPV4);
        let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), ipv4::protocol::UDP);
        assert_eq!(ip.src_addr(), std::net::Ipv4Addr::new(192, 168, 56, 11));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(u.dst_port(), DEFAULT_PORT_LINUX);
        assert_eq!(u.checksum(), 0);
        let vx = Packet::new_checked(u.payload()).unwrap();
        assert_eq!(vx.flags(), FLAG_I);
        assert_eq!(vx.vni(), 1);
        assert_eq!(vx.payload(), &VXLAN_FRAME_BYTES[VXLAN_AT + 8..]);
        let inner = ethernet::Frame::new_checked(vx.payload()).unwrap();
        assert_eq!(inner.dst_addr().to_string(), "ee:a1:b2:c3:d4:e5");
        assert_eq!(inner.src_addr().to_string(), "4e:1f:7a:00:2c:91");
        let inner_ip = ipv4::Packet::new_checked(inner.payload()).unwrap();
        assert!(inner_ip.verify_checksum());
        assert_eq!(inner_ip.protocol(), ipv4::protocol::ICMP);
        assert_eq!(inner_ip.ttl(), 63);
    }

    #[test]
    fn emit_header_matches_fixture() {
        let mut buf = [0xa5u8; 66];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.emit_header(1);
        p.payload_mut()
            .copy_from_slice(&VXLAN_FRAME_BYTES[VXLAN_AT + 8..]);
        assert_eq!(&buf[..], &VXLAN_FRAME_BYTES[VXLAN_AT..]);
    }

    #[test]
    fn vni_range_and_reserved_bits() {
        let mut buf = [0xffu8; 8];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        // Reserved bits set: still accepted, VNI read without them.
        assert_eq!(p.check_len(), Ok(()));
        assert_eq!(p.vni(), MAX_VNI);
        p.set_vni(0x12_3456);
        assert_eq!(p.vni(), 0x12_3456);
        assert_eq!(buf, [0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x00]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags(0x0c);
        assert_eq!(p.flags(), 0x0c);
        p.emit_header(MAX_VNI);
        assert_eq!(buf, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn check_len_errors() {
        let vx = &VXLAN_FRAME_BYTES[VXLAN_AT..];
        assert_eq!(Packet::new_checked(&vx[..7]).unwrap_err(), Error::Truncated);
        assert!(Packet::new_checked(&vx[..8]).unwrap().payload().is_empty());
        let mut b = [0u8; 8];
        b.copy_from_slice(&vx[..8]);
        b[0] = 0x00;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadFlags);
        b[0] = 0xf7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::BadFlags);
    }

    #[test]
    fn truncations_never_panic() {
        let vx = &VXLAN_FRAME_BYTES[VXLAN_AT..];
        for n in 0..=vx.len() {
            if let Ok(p) = Packet::new_checked(&vx[..n]) {
                let _ = (p.flags(), p.vni(), p.payload().len());
                let mut q = Packet::new_checked(vx[..n].to_vec()).unwrap();
                q.set_flags(FLAG_I);
                q.set_vni(7);
                q.emit_header(9);
                q.payload_mut().fill(0);
            }
        }
    }
}
