//! IPv4 headers (RFC 791).
//!
//! [`Packet::payload`] ends at the total length field, not at the end of the
//! buffer: Ethernet padding after a short datagram is excluded. The header
//! checksum is not verified by `check_len`; call
//! [`Packet::verify_checksum`] where the pipeline wants it.

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol numbers this dataplane looks at.
pub mod protocol {
    /// ICMPv4.
    pub const ICMP: u8 = 1;
    /// IPv4-in-IPv4 (RFC 2003).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 packet (header and payload).
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

    /// Checks, in order: at least 20 bytes (`Truncated`); version 4
    /// (`BadVersion`); IHL at least 5 (`BadHeaderLen`); header within the
    /// buffer (`Truncated`); total length at least the header length
    /// (`BadTotalLen`); total length within the buffer (`Truncated`).
    /// The checksum is not checked.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadTotalLen);
        }
        if total_len > len {
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

    /// IP version (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (former TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length of the datagram (header and payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT.start)
    }

    #[inline]
    fn flags_and_offset(&self) -> u16 {
        self.read_u16(field::FLG_OFF.start)
    }

    /// The Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_and_offset() & FLAG_DF != 0
    }

    /// The More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field times 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Whether the L4 header is here: offset 0 (first fragment or whole).
    #[inline]
    pub fn is_first_fragment_or_whole(&self) -> bool {
        self.flags_and_offset() & OFFSET_MASK == 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_u32())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_u32())
    }

    /// Source address as a host-order integer (10.0.0.1 is 0x0a000001).
    #[inline]
    pub fn src_u32(&self) -> u32 {
        self.read_u32(field::SRC.start)
    }

    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst_u32(&self) -> u32 {
        self.read_u32(field::DST.start)
    }

    /// The options: bytes 20 to the header length.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: from the header length to the total length (Ethernet
    /// padding after the datagram is excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        &self.buffer.as_ref()[self.header_len()..end]
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Writes version 4 and the IHL for `header_len` bytes (0x45 for 20).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(header_len & 3 == 0 && (HEADER_LEN..=60).contains(&header_len));
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP/ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.write_u16(field::LENGTH.start, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.write_u16(field::IDENT.start, v);
    }

    /// Sets DF, MF and the fragment offset, given in bytes (a multiple of 8).
    #[inline]
    pub fn set_flags_and_frag_offset(
        &mut self,
        dont_frag: bool,
        more_frags: bool,
        offset_bytes: u16,
    ) {
        debug_assert!(
            offset_bytes & 7 == 0,
            "fragment offset {offset_bytes} not a multiple of 8"
        );
        let mut v = (offset_bytes >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.write_u16(field::FLG_OFF.start, v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.write_u16(field::CHECKSUM.start, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Zeroes the checksum field, then computes it over `header_len` bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// The payload (header length to total length), mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }

    /// Decrements the TTL by one and updates the checksum incrementally
    /// (RFC 1624, on the TTL/protocol word). The caller has checked that the
    /// TTL allows forwarding (> 1); a TTL of 0 would wrap to 255.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl();
        debug_assert!(ttl > 0, "decrement_ttl on TTL 0");
        let new_ttl = ttl.wrapping_sub(1);
        let c = if ttl != 0 {
            // The TTL/protocol word drops by exactly 0x0100, so in
            // `update_u16`'s ~(~HC + ~m + m') the ~m + m' is 0xfeff whatever
            // the protocol, and the sum (at most 0x1fefe) folds in one step:
            // the same result in a few instructions.
            let s = u32::from(!self.checksum()) + 0xfeff;
            !(((s & 0xffff) + (s >> 16)) as u16)
        } else {
            let proto = self.protocol();
            let old = u16::from_be_bytes([ttl, proto]);
            let new = u16::from_be_bytes([new_ttl, proto]);
            checksum::update_u16(self.checksum(), old, new)
        };
        self.set_ttl(new_ttl);
        self.set_checksum(c);
    }
}

/// The fields of an option-less, unfragmented IPv4 header, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// Payload length in bytes; the total length is 20 more.
    pub payload_len: usize,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// DSCP/ECN byte.
    pub dscp_ecn: u8,
}

impl Repr {
    /// Reads the representation back from a checked packet (options and
    /// fragmentation fields are not represented; `payload_len` excludes
    /// the options).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            dscp_ecn: packet.dscp_ecn(),
        }
    }

    /// The emitted header length (20).
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload length.
    #[inline]
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 20-byte header (no options, offset 0, MF clear) with a
    /// correct checksum. The payload is not touched.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than 20 bytes (the caller sizes it); in debug
    /// builds, if the total length does not fit 16 bits.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(
            self.total_len() <= usize::from(u16::MAX),
            "IPv4 payload too long"
        );
        packet.set_version_and_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(self.total_len() as u16);
        packet.set_ident(self.ident);
        packet.set_flags_and_frag_offset(self.dont_frag, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.set_checksum(0);
        let c = checksum::checksum(&packet.buffer.as_ref()[..HEADER_LEN]);
        packet.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Outer header of a VXLAN packet: 192.168.56.11 -> 192.168.56.12, UDP,
    /// TTL 64, DF, ident 0x7a2b, total length 94.
    static OUTER_HEADER_BYTES: [u8; 20] = [
        0x45, 0x00, 0x00, 0x5e, 0x7a, 0x2b, 0x40, 0x00, 0x40, 0x11, 0xce, 0xfb, //
        0xc0, 0xa8, 0x38, 0x0b, 0xc0, 0xa8, 0x38, 0x0c,
    ];

    /// 10.244.1.5 -> 10.244.2.9, ICMP echo request, TTL 63, DF, ident 0x5c1e.
    static INNER_IPV4_BYTES: [u8; 44] = [
        0x45, 0x00, 0x00, 0x2c, 0x5c, 0x1e, 0x40, 0x00, 0x3f, 0x01, 0xc6, 0xbd, //
        0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x09, 0x08, 0x00, 0xd5, 0xde, //
        0x0b, 0x3c, 0x00, 0x01, 0x6b, 0x2d, 0x5f, 0x66, 0x00, 0x00, 0x00, 0x00, //
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    /// IHL 6 with a Router Alert option, DSCP EF, UDP 40000 -> 9000 "ping",
    /// total length 36, followed by 4 bytes of Ethernet padding.
    static IPV4_OPTIONS_BYTES: [u8; 40] = [
        0x46, 0xb8, 0x00, 0x24, 0x01, 0x01, 0x00, 0x00, 0x40, 0x11, 0xcb, 0x16, //
        0x0a, 0xf4, 0x01, 0x05, 0x0a, 0xf4, 0x02, 0x09, 0x94, 0x04, 0x00, 0x00, //
        0x9c, 0x40, 0x23, 0x28, 0x00, 0x0c, 0x48, 0xa7, 0x70, 0x69, 0x6e, 0x67, //
        0x00, 0x00, 0x00, 0x00,
    ];

    fn outer_repr() -> Repr {
        Repr {
            src: Ipv4Addr::new(192, 168, 56, 11),
            dst: Ipv4Addr::new(192, 168, 56, 12),
            protocol: protocol::UDP,
            ttl: 64,
            payload_len: 74,
            ident: 0x7a2b,
            dont_frag: true,
            dscp_ecn: 0,
        }
    }

    #[test]
    fn inner_fields() {
        let p = Packet::new_checked(&INNER_IPV4_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 44);
        assert_eq!(p.ident(), 0x5c1e);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert!(p.is_first_fragment_or_whole());
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.protocol(), protocol::ICMP);
        assert_eq!(p.checksum(), 0xc6bd);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 244, 1, 5));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 244, 2, 9));
        assert_eq!(p.src_u32(), 0x0af4_0105);
        assert_eq!(p.dst_u32(), 0x0af4_0209);
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &INNER_IPV4_BYTES[20..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn outer_header_fields() {
        // Only the header: total length 94 claims more than the buffer.
        let p = Packet::new_unchecked(&OUTER_HEADER_BYTES[..]);
        assert_eq!(p.check_len(), Err(Error::Truncated));
        assert!(p.verify_checksum());
        assert_eq!(p.total_len(), 94);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.ttl(), 64);
        assert_eq!(Repr::parse(&p), outer_repr());
    }

    #[test]
    fn options_and_padding() {
        let p = Packet::new_checked(&IPV4_OPTIONS_BYTES[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp_ecn(), 0xb8);
        assert_eq!(p.total_len(), 36);
        assert_eq!(p.ident(), 0x0101);
        assert!(!p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.payload(), &IPV4_OPTIONS_BYTES[24..36]);
        assert_eq!(&p.payload()[8..], b"ping");
        assert!(p.verify_checksum());
        let r = Repr::parse(&p);
        assert_eq!(r.payload_len, 12);
    }

    #[test]
    fn emit_outer_matches_fixture() {
        let mut buf = [0xa5u8; 20];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        outer_repr().emit(&mut p);
        assert_eq!(&buf[..], &OUTER_HEADER_BYTES[..]);
    }

    #[test]
    fn emit_inner_matches_fixture() {
        let repr = Repr {
            src: Ipv4Addr::new(10, 244, 1, 5),
            dst: Ipv4Addr::new(10, 244, 2, 9),
            protocol: protocol::ICMP,
            ttl: 63,
            payload_len: 24,
            ident: 0x5c1e,
            dont_frag: true,
            dscp_ecn: 0,
        };
        assert_eq!(repr.total_len(), 44);
        assert_eq!(repr.header_len(), 20);
        let mut buf = [0xa5u8; 44];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&INNER_IPV4_BYTES[20..]);
        assert_eq!(&buf[..], &INNER_IPV4_BYTES[..]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr);
    }

    #[test]
    fn emit_by_setters_matches_fixture() {
        let mut buf = [0xa5u8; 40];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(24);
        p.set_dscp_ecn(0xb8);
        p.set_total_len(36);
        p.set_ident(0x0101);
        p.set_flags_and_frag_offset(false, false, 0);
        p.set_ttl(64);
        p.set_protocol(protocol::UDP);
        p.set_src_addr(Ipv4Addr::new(10, 244, 1, 5));
        p.set_dst_addr(Ipv4Addr::new(10, 244, 2, 9));
        p.buffer[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&IPV4_OPTIONS_BYTES[24..36]);
        buf[36..].fill(0);
        assert_eq!(&buf[..], &IPV4_OPTIONS_BYTES[..]);
    }

    #[test]
    fn header_len_byte() {
        let mut buf = [0u8; 20];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(20);
        assert_eq!(buf[0], 0x45);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_version_and_header_len(60);
        assert_eq!(buf[0], 0x4f);
    }

    #[test]
    fn fragments() {
        let mut buf = INNER_IPV4_BYTES;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags_and_frag_offset(false, true, 0);
        assert!(p.more_frags() && !p.dont_frag());
        assert!(p.is_fragment() && p.is_first_fragment_or_whole());
        assert_eq!(p.frag_offset(), 0);
        p.set_flags_and_frag_offset(false, true, 1480);
        assert_eq!(&p.buffer[6..8], &[0x20, 0xb9]);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment() && !p.is_first_fragment_or_whole());
        p.set_flags_and_frag_offset(false, false, 2960);
        assert!(!p.more_frags());
        assert!(p.is_fragment() && !p.is_first_fragment_or_whole());
        assert_eq!(p.frag_offset(), 2960);
        p.set_flags_and_frag_offset(true, false, 65528);
        assert_eq!(p.frag_offset(), 65528);
        assert!(p.dont_frag());
    }

    #[test]
    fn decrement_ttl_fixture() {
        let mut buf = INNER_IPV4_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.decrement_ttl();
        assert_eq!(p.ttl(), 62);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        assert_eq!(incremental, 0xc7bd);
    }

    #[test]
    fn decrement_ttl_equals_update_u16_for_every_checksum() {
        for (ttl, proto) in [(1u8, 17u8), (2, 6), (64, 1), (128, 4), (255, 0xff)] {
            for check in 0..=u16::MAX {
                let mut h = INNER_IPV4_BYTES;
                let mut p = Packet::new_unchecked(&mut h[..]);
                p.set_ttl(ttl);
                p.set_protocol(proto);
                p.set_checksum(check);
                p.decrement_ttl();
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl.wrapping_sub(1), proto]);
                assert_eq!(
                    p.checksum(),
                    checksum::update_u16(check, old, new),
                    "ttl {ttl} check {check:#x}"
                );
                assert_eq!(p.ttl(), ttl.wrapping_sub(1));
            }
        }
    }

    #[test]
    fn bad_checksum_detected() {
        let mut buf = INNER_IPV4_BYTES;
        buf[11] ^= 1;
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.verify_checksum());
    }

    #[test]
    fn check_len_errors() {
        let check = |b: &[u8]| Packet::new_checked(b).map(|_| ());
        assert_eq!(check(&[]), Err(Error::Truncated));
        assert_eq!(check(&INNER_IPV4_BYTES[..19]), Err(Error::Truncated));

        let mut b = INNER_IPV4_BYTES;
        b[0] = 0x65;
        assert_eq!(check(&b), Err(Error::BadVersion));
        b[0] = 0x44;
        assert_eq!(check(&b), Err(Error::BadHeaderLen));
        b[0] = 0x40;
        assert_eq!(check(&b), Err(Error::BadHeaderLen));

        // IHL 6 but only 22 bytes: header beyond the buffer.
        assert_eq!(check(&IPV4_OPTIONS_BYTES[..22]), Err(Error::Truncated));
        // Header of 24 bytes, total length 20.
        let mut o = IPV4_OPTIONS_BYTES;
        o[3] = 20;
        assert_eq!(check(&o), Err(Error::BadTotalLen));
        o[3] = 24;
        assert_eq!(check(&o), Ok(()));
        // Total length beyond the buffer.
        assert_eq!(check(&INNER_IPV4_BYTES[..43]), Err(Error::Truncated));
        assert_eq!(check(&OUTER_HEADER_BYTES), Err(Error::Truncated));
        // Padding after the datagram is fine.
        assert_eq!(check(&IPV4_OPTIONS_BYTES), Ok(()));
    }

    fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        );
        let _ = (
            p.is_first_fragment_or_whole(),
            p.ttl(),
            p.protocol(),
            p.checksum(),
        );
        let _ = (p.src_addr(), p.dst_addr(), p.src_u32(), p.dst_u32());
        let _ = (
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(),
            Repr::parse(p),
        );
    }

    #[test]
    fn truncations_never_panic() {
        for fix in [
            &OUTER_HEADER_BYTES[..],
            &INNER_IPV4_BYTES[..],
            &IPV4_OPTIONS_BYTES[..],
        ] {
            for n in 0..=fix.len() {
                if let Ok(p) = Packet::new_checked(&fix[..n]) {
                    exercise(&p);
                    let mut q = Packet::new_checked(fix[..n].to_vec()).unwrap();
                    let (hl, tl) = (q.header_len(), q.total_len());
                    q.set_version_and_header_len(hl);
                    q.set_total_len(tl);
                    q.set_dscp_ecn(1);
                    q.set_ident(2);
                    q.set_flags_and_frag_offset(true, false, 8);
                    q.set_ttl(9);
                    q.set_protocol(protocol::TCP);
                    q.set_src_addr(Ipv4Addr::LOCALHOST);
                    q.set_dst_addr(Ipv4Addr::BROADCAST);
                    q.fill_checksum();
                    q.decrement_ttl();
                    q.payload_mut().fill(0);
                    assert!(q.verify_checksum());
                    exercise(&q);
                }
            }
        }
    }

    fn header_strategy() -> impl Strategy<Value = (Repr, bool, bool, u16)> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            2u8..=255,
            0usize..1480,
            any::<u16>(),
            any::<(bool, bool)>(),
            any::<u8>(),
            0u16..=OFFSET_MASK,
        )
            .prop_map(
                |(s, d, protocol, ttl, payload_len, ident, (df, mf), dscp_ecn, off)| {
                    let repr = Repr {
                        src: Ipv4Addr::from(s),
                        dst: Ipv4Addr::from(d),
                        protocol,
                        ttl,
                        payload_len,
                        ident,
                        dont_frag: df,
                        dscp_ecn,
                    };
                    (repr, df, mf, off * 8)
                },
            )
    }

    proptest! {
        #[test]
        fn decrement_ttl_matches_recompute((repr, df, mf, off) in header_strategy()) {
            let mut buf = vec![0u8; repr.total_len()];
            let mut p = Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            p.set_flags_and_frag_offset(df, mf, off);
            p.fill_checksum();
            prop_assert!(p.verify_checksum());
            p.decrement_ttl();
            prop_assert_eq!(p.ttl(), repr.ttl - 1);
            prop_assert!(p.verify_checksum());
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
        }

        #[test]
        fn emit_parse_round_trip((repr, _, _, _) in header_strategy()) {
            let mut buf = vec![0x5a; repr.total_len()];
            let mut p = Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert!(!p.is_fragment());
            prop_assert_eq!(Repr::parse(&p), repr);
        }
    }
}
