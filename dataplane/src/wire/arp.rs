//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses only.

use std::net::Ipv4Addr;

use super::ethernet::{ethertype, MacAddr};
use super::{Error, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// ARP hardware type for Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;

/// ARP operation codes.
pub mod operation {
    /// Who has `target_ip`?
    pub const REQUEST: u16 = 1;
    /// `sender_ip` is at `sender_hw_addr`.
    pub const REPLY: u16 = 2;
}

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view over an Ethernet/IPv4 ARP packet.
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

    /// `Truncated` if shorter than 28 bytes; `Unsupported` unless the
    /// hardware is Ethernet (1, length 6) and the protocol IPv4 (0x0800,
    /// length 4).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HARDWARE_ETHERNET
            || self.protocol_type() != ethertype::IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Unsupported);
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
    fn read_mac(&self, at: usize) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[at..at + 6]);
        MacAddr(a)
    }

    #[inline]
    fn read_ip(&self, at: usize) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
    }

    /// Hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        self.read_u16(field::HTYPE.start)
    }

    /// Protocol type (0x0800 for IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        self.read_u16(field::PTYPE.start)
    }

    /// Hardware address length (6).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation (see [`operation`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        self.read_u16(field::OPER.start)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_hw_addr(&self) -> MacAddr {
        self.read_mac(field::SHA.start)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.read_ip(field::SPA.start)
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw_addr(&self) -> MacAddr {
        self.read_mac(field::THA.start)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        self.read_ip(field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, v: u16) {
        self.write_u16(field::HTYPE.start, v);
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, v: u16) {
        self.write_u16(field::PTYPE.start, v);
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, v: u16) {
        self.write_u16(field::OPER.start, v);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

/// Writes a complete 28-byte Ethernet/IPv4 ARP packet at the start of `buf`.
///
/// # Panics
///
/// If `buf.len() < PACKET_LEN` (28); the caller sizes the buffer.
#[inline]
pub fn emit_ethernet_ipv4(
    buf: &mut [u8],
    op: u16,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
) {
    let mut p = Packet::new_unchecked(&mut buf[..PACKET_LEN]);
    p.set_hardware_type(HARDWARE_ETHERNET);
    p.set_protocol_type(ethertype::IPV4);
    p.set_hardware_len(6);
    p.set_protocol_len(4);
    p.set_operation(op);
    p.set_sender_hw_addr(sender_mac);
    p.set_sender_ip(sender_ip);
    p.set_target_hw_addr(target_mac);
    p.set_target_ip(target_ip);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who has 10.244.1.7? Tell 10.244.1.1 (52:54:00:12:34:56).
    static ARP_REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, //
        0x34, 0x56, 0x0a, 0xf4, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x0a, 0xf4, 0x01, 0x07,
    ];

    const SENDER_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const SENDER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    const TARGET_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

    #[test]
    fn request_fields() {
        let p = Packet::new_checked(&ARP_REQUEST_BYTES[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), operation::REQUEST);
        assert_eq!(p.sender_hw_addr(), SENDER_MAC);
        assert_eq!(p.sender_ip(), SENDER_IP);
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), TARGET_IP);
    }

    #[test]
    fn emit_request_matches_fixture() {
        let mut buf = [0xa5u8; 28];
        emit_ethernet_ipv4(
            &mut buf,
            operation::REQUEST,
            SENDER_MAC,
            SENDER_IP,
            MacAddr::ZERO,
            TARGET_IP,
        );
        assert_eq!(&buf[..], &ARP_REQUEST_BYTES[..]);
    }

    #[test]
    fn emit_only_touches_28_bytes() {
        let mut buf = [0xa5u8; 40];
        emit_ethernet_ipv4(
            &mut buf,
            operation::REQUEST,
            SENDER_MAC,
            SENDER_IP,
            MacAddr::ZERO,
            TARGET_IP,
        );
        assert_eq!(&buf[..28], &ARP_REQUEST_BYTES[..]);
        assert!(buf[28..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn reply_by_setters() {
        let target_mac = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x07]);
        let mut buf = ARP_REQUEST_BYTES;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_operation(operation::REPLY);
        p.set_target_hw_addr(SENDER_MAC);
        p.set_target_ip(SENDER_IP);
        p.set_sender_hw_addr(target_mac);
        p.set_sender_ip(TARGET_IP);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), operation::REPLY);
        assert_eq!(p.sender_hw_addr(), target_mac);
        assert_eq!(p.sender_ip(), TARGET_IP);
        assert_eq!(p.target_hw_addr(), SENDER_MAC);
        assert_eq!(p.target_ip(), SENDER_IP);

        let mut expected = vec![0u8; 28];
        emit_ethernet_ipv4(
            &mut expected,
            operation::REPLY,
            target_mac,
            TARGET_IP,
            SENDER_MAC,
            SENDER_IP,
        );
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn check_len_errors() {
        assert_eq!(
            Packet::new_checked(&ARP_REQUEST_BYTES[..27]).unwrap_err(),
            Error::Truncated
        );
        for (i, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = ARP_REQUEST_BYTES;
            b[i] = v;
            assert_eq!(
                Packet::new_checked(&b[..]).unwrap_err(),
                Error::Unsupported,
                "byte {i}"
            );
        }
        let mut longer = ARP_REQUEST_BYTES.to_vec();
        longer.extend_from_slice(&[0; 18]); // Ethernet padding
        assert!(Packet::new_checked(&longer[..]).is_ok());
    }

    #[test]
    fn truncations_never_panic() {
        for n in 0..=ARP_REQUEST_BYTES.len() {
            if let Ok(p) = Packet::new_checked(&ARP_REQUEST_BYTES[..n]) {
                let _ = (
                    p.hardware_type(),
                    p.protocol_type(),
                    p.hardware_len(),
                    p.protocol_len(),
                );
                let _ = (p.operation(), p.sender_hw_addr(), p.sender_ip());
                let _ = (p.target_hw_addr(), p.target_ip());
                let mut q = Packet::new_checked(ARP_REQUEST_BYTES[..n].to_vec()).unwrap();
                q.set_operation(operation::REPLY);
                q.set_hardware_type(1);
                q.set_protocol_type(0x0800);
                q.set_hardware_len(6);
                q.set_protocol_len(4);
                q.set_sender_hw_addr(MacAddr::ZERO);
                q.set_sender_ip(SENDER_IP);
                q.set_target_hw_addr(MacAddr::ZERO);
                q.set_target_ip(TARGET_IP);
            }
        }
    }
}
