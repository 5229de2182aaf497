//! Ethernet II frames, with at most one 802.1Q VLAN tag.
//!
//! A tagged frame (outer ethertype 0x8100) is parsed one tag deep: the TCI
//! and the inner ethertype are exposed and the payload starts after the tag.
//! A second (QinQ) tag is not parsed; its 0x8100 shows as the ethertype.

use core::fmt;
use core::str::FromStr;

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

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the I/G (group) bit is set; broadcast is multicast too.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the I/G bit is clear.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Writes `aa:bb:cc:dd:ee:ff` (lowercase) into a stack buffer.
    fn to_text(self) -> [u8; 17] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b':'; 17];
        for (i, b) in self.0.iter().enumerate() {
            out[i * 3] = HEX[usize::from(b >> 4)];
            out[i * 3 + 1] = HEX[usize::from(b & 0x0f)];
        }
        out
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a MAC address of the form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseMacError {
    input: String,
}

impl ParseMacError {
    /// The rejected input.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?} (expected aa:bb:cc:dd:ee:ff)",
            self.input
        )
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Parses six colon-separated pairs of hex digits (either case).
    fn from_str(s: &str) -> core::result::Result<Self, Self::Err> {
        fn hex(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != b':' {
                return Err(err());
            }
            let hi = hex(b[at]).ok_or_else(err)?;
            let lo = hex(b[at + 1]).ok_or_else(err)?;
            *o = hi << 4 | lo;
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> core::result::Result<S::Ok, S::Error> {
        let text = self.to_text();
        // Only ASCII hex digits and colons were written.
        let s = core::str::from_utf8(&text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(s)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> core::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

    #[test]
    fn mac_predicates() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast());
        assert!(HOST_A.is_unicast() && !HOST_A.is_multicast());
        assert!(MacAddr::ZERO.is_unicast());
        assert_eq!(MacAddr::default(), MacAddr::ZERO);
        assert_eq!(HOST_A.octets(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(MacAddr::from([1, 2, 3, 4, 5, 6]).0, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn mac_display_and_parse() {
        let m = MacAddr([0x0a, 0x58, 0xff, 0x00, 0xbc, 0x09]);
        assert_eq!(m.to_string(), "0a:58:ff:00:bc:09");
        assert_eq!(format!("{m:?}"), "0a:58:ff:00:bc:09");
        assert_eq!("0a:58:ff:00:bc:09".parse::<MacAddr>().unwrap(), m);
        assert_eq!("0A:58:FF:00:Bc:09".parse::<MacAddr>().unwrap(), m);
        assert_eq!(core::str::from_utf8(&m.to_text()).unwrap(), m.to_string());
        for bad in [
            "",
            "0a:58:ff:00:bc",
            "0a:58:ff:00:bc:09:",
            "0a:58:ff:00:bc:0g",
            "0a-58-ff-00-bc-09",
            "0a:58:ff:00:bc:+9",
            "0a:58:ff:00:bc: 9",
            "0a:58:ff:00:bc:009",
            "a:58:ff:00:bc:09",
            "0a:58:ff:00:bc:é",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.input(), bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn mac_serde_round_trip() {
        let m = MacAddr([0xee, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"ee:a1:b2:c3:d4:e5\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
        assert_eq!(
            serde_json::from_str::<MacAddr>("\"EE:A1:B2:C3:D4:E5\"").unwrap(),
            m
        );
        let err = serde_json::from_str::<MacAddr>("\"ee:a1\"").unwrap_err();
        assert!(err.to_string().contains("ee:a1"), "{err}");
        assert!(serde_json::from_str::<MacAddr>("17").is_err());
    }
}
