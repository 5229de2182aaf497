//! Ethernet II frames, with at most one 802.1Q VLAN tag.
//!
//! A tagged frame (outer ethertype 0x8100) is parsed one tag deep: the TCI
//! and the inner ethertype are exposed and the payload starts after the tag.
//! A second (QinQ) tag is not parsed; its 0x8100 shows as the ethertype.

use super::{Error, Result};

/// Ethertype values this dataplane handles.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// A 48-bit Ethernet MAC address (the control API's type).
pub use sluice_api::MacAddr;

mod field {
    use core::ops::Range;

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const VLAN_TCI: Range<usize> = 14..16;
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer and checks its length (see [`Frame::check_len`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` unless the buffer holds the 14-byte header, and the
    /// 18-byte header when the outer ethertype is 802.1Q.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.outer_ethertype() == ethertype::VLAN && b.len() < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        MacAddr(a)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        MacAddr(a)
    }

    #[inline]
    fn outer_ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::ETHERTYPE.start], b[field::ETHERTYPE.start + 1]])
    }

    /// The 802.1Q tag control information, if the frame is tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.outer_ethertype() == ethertype::VLAN {
            let b = self.buffer.as_ref();
            Some(u16::from_be_bytes([
                b[field::VLAN_TCI.start],
                b[field::VLAN_TCI.start + 1],
            ]))
        } else {
            None
        }
    }

    /// The 12-bit VLAN id, if the frame is tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0fff)
    }

    /// The ethertype of the payload: after the 802.1Q tag when tagged.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let outer = self.outer_ethertype();
        if outer == ethertype::VLAN {
            let b = self.buffer.as_ref();
            let i = field::INNER_ETHERTYPE.start;
            u16::from_be_bytes([b[i], b[i + 1]])
        } else {
            outer
        }
    }

    /// 14, or 18 for a tagged frame.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.outer_ethertype() == ethertype::VLAN {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (including any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Writes the ethertype at offset 12: for untagged frames and emitting.
    /// On a tagged frame this overwrites the 0x8100 of the tag.
    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VXLAN-encapsulated ICMP echo, untagged: the outer Ethernet header
    /// (52:54:00:12:34:56 -> 52:54:00:ab:cd:ef, IPv4) comes first.
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

    /// A broadcast ARP request tagged with VLAN 100, priority 3.
    static TAGGED_FRAME_BYTES: [u8; 46] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        0x81, 0x00, 0x60, 0x64, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, //
        0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0xf4, 0x01, 0x01, //
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0xf4, 0x01, 0x07,
    ];

    const HOST_A: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const HOST_B: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    #[test]
    fn untagged_fields() {
        let f = Frame::new_checked(&VXLAN_FRAME_BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), HOST_B);
        assert_eq!(f.src_addr(), HOST_A);
        assert_eq!(f.vlan_tci(), None);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.header_len(), HEADER_LEN);
        assert_eq!(f.payload(), &VXLAN_FRAME_BYTES[14..]);
        assert_eq!(f.payload()[0], 0x45);
    }

    #[test]
    fn tagged_fields() {
        let f = Frame::new_checked(&TAGGED_FRAME_BYTES[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert!(f.dst_addr().is_broadcast());
        assert_eq!(f.src_addr(), HOST_A);
        assert_eq!(f.vlan_tci(), Some(0x6064));
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.header_len(), VLAN_HEADER_LEN);
        assert_eq!(f.payload().len(), 28);
        assert_eq!(f.payload(), &TAGGED_FRAME_BYTES[18..]);
    }

    #[test]
    fn qinq_shows_second_tag_as_ethertype() {
        let mut bytes = TAGGED_FRAME_BYTES;
        bytes[16] = 0x81;
        bytes[17] = 0x00;
        let f = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), ethertype::VLAN);
        assert_eq!(f.header_len(), 18);
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = vec![0xa5; VXLAN_FRAME_BYTES.len()];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst_addr(HOST_B);
        f.set_src_addr(HOST_A);
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut().copy_from_slice(&VXLAN_FRAME_BYTES[14..]);
        assert_eq!(&buf[..], &VXLAN_FRAME_BYTES[..]);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(Frame::new_checked(&[][..]).unwrap_err(), Error::Truncated);
        assert_eq!(
            Frame::new_checked(&VXLAN_FRAME_BYTES[..13]).unwrap_err(),
            Error::Truncated
        );
        assert!(Frame::new_checked(&VXLAN_FRAME_BYTES[..14]).is_ok());
        assert_eq!(
            Frame::new_checked(&TAGGED_FRAME_BYTES[..14]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Frame::new_checked(&TAGGED_FRAME_BYTES[..17]).unwrap_err(),
            Error::Truncated
        );
        let f = Frame::new_checked(&TAGGED_FRAME_BYTES[..18]).unwrap();
        assert!(f.payload().is_empty());
    }

    fn exercise<T: AsRef<[u8]>>(f: &Frame<T>) {
        let _ = (f.dst_addr(), f.src_addr(), f.vlan_tci(), f.vlan_id());
        let _ = (f.ethertype(), f.header_len(), f.payload().len());
    }

    #[test]
    fn truncations_never_panic() {
        for fix in [&VXLAN_FRAME_BYTES[..], &TAGGED_FRAME_BYTES[..]] {
            for n in 0..=fix.len() {
                if let Ok(f) = Frame::new_checked(&fix[..n]) {
                    exercise(&f);
                    let mut owned = Frame::new_checked(fix[..n].to_vec()).unwrap();
                    let (d, s) = (owned.dst_addr(), owned.src_addr());
                    owned.set_dst_addr(d);
                    owned.set_src_addr(s);
                    owned.payload_mut().fill(0);
                    exercise(&owned);
                }
            }
        }
    }
}
