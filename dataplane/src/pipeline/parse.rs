//! Stage 1: parse. Ethernet, then ARP or IPv4 with L4 ports.
//!
//! IPv4 is validated fully here (lengths, IHL, header checksum) so later
//! stages may use unchecked accessors at `L3_OFFSET`. Ethernet padding past
//! the IPv4 total length is trimmed from the buffer. Fragments carry no ports
//! in their flow key, so all fragments of a datagram hash alike (RFC 7348
//! section 5 entropy on addresses only).

use super::{Meta, Next, L3_OFFSET};
use crate::buffer::PacketBuf;
use crate::counters::DropReason;
use crate::fib::flow_cache::FlowKey;
use crate::tables::PortId;
use crate::wire::{checksum, ethernet::ethertype, ipv4, tcp, udp, Error};

/// Parses every packet of the burst; returns the bytes received (the frame
/// lengths before any trimming), for the port's rx counter.
pub(crate) fn parse_burst<B: PacketBuf>(bufs: &mut [B], meta: &mut [Meta], in_port: PortId) -> u64 {
    let mut bytes = 0;
    for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
        bytes += buf.len() as u64;
        *m = parse_one(buf, in_port);
    }
    bytes
}

#[inline]
fn parse_one<B: PacketBuf>(buf: &mut B, in_port: PortId) -> Meta {
    let d = buf.data();
    if d.len() < L3_OFFSET {
        return Meta::drop(DropReason::EthTruncated);
    }
    match u16::from_be_bytes([d[12], d[13]]) {
        ethertype::IPV4 => match parse_ipv4_checked(buf, in_port, buf.ipv4_checksum_verified()) {
            Ok((key, ttl)) => Meta {
                next: Next::L3,
                key,
                ttl,
                ..Meta::default()
            },
            Err(r) => Meta::drop(r),
        },
        ethertype::ARP => Meta {
            next: Next::Arp,
            ..Meta::default()
        },
        ethertype::VLAN => Meta::drop(DropReason::VlanTagged),
        _ => Meta {
            next: Next::NonIp,
            ..Meta::default()
        },
    }
}

/// Maps an IPv4 view error to its drop reason.
#[inline]
pub(crate) fn ipv4_error(e: Error) -> DropReason {
    match e {
        Error::BadVersion => DropReason::Ipv4BadVersion,
        Error::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
        Error::BadTotalLen => DropReason::Ipv4BadTotalLen,
        _ => DropReason::Ipv4Truncated,
    }
}

/// Validates the IPv4 packet at `L3_OFFSET`, trims padding, and returns its
/// flow key and TTL.
#[inline(always)]
pub(crate) fn parse_ipv4<B: PacketBuf>(
    buf: &mut B,
    in_port: PortId,
) -> Result<(FlowKey, u8), DropReason> {
    parse_ipv4_checked(buf, in_port, false)
}

/// As [`parse_ipv4`]; `hw_verified`: the device already found the header
/// checksum good, so the option-less fast path does not compute it again.
#[inline(always)]
fn parse_ipv4_checked<B: PacketBuf>(
    buf: &mut B,
    in_port: PortId,
    hw_verified: bool,
) -> Result<(FlowKey, u8), DropReason> {
    let d = buf.data();
    let (key, ttl, end) = match parse_ipv4_fast(d, in_port, hw_verified) {
        Some(r) => r?,
        None => parse_ipv4_general(d, in_port)?,
    };
    buf.truncate(end);
    Ok((key, ttl))
}

/// The common case, an option-less header (IHL 5), read through a fixed-size
/// array so that no field access needs a bounds check. `None` when the
/// frame is too short for the header or the first byte is not 0x45: the
/// general path decides those. Otherwise the answer is exactly the general
/// path's: same checks, in the same order, same drop reasons.
#[inline(always)]
fn parse_ipv4_fast(
    d: &[u8],
    in_port: PortId,
    hw_verified: bool,
) -> Option<Result<(FlowKey, u8, usize), DropReason>> {
    let (h, _) = d
        .get(L3_OFFSET..)?
        .split_first_chunk::<{ ipv4::HEADER_LEN }>()?;
    if h[0] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let end = L3_OFFSET + total;
    if total < ipv4::HEADER_LEN {
        return Some(Err(DropReason::Ipv4BadTotalLen));
    }
    if end > d.len() {
        return Some(Err(DropReason::Ipv4Truncated));
    }
    if !hw_verified && !checksum::ipv4_header_ok(h) {
        return Some(Err(DropReason::Ipv4BadChecksum));
    }
    let protocol = h[9];
    let (mut sport, mut dport) = (0, 0);
    // Not a fragment: MF clear and offset zero.
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0 {
        let min = match protocol {
            ipv4::protocol::UDP => udp::HEADER_LEN,
            ipv4::protocol::TCP => 20,
            _ => 0,
        };
        if min > 0 {
            if total - ipv4::HEADER_LEN < min {
                return Some(Err(DropReason::L4Truncated));
            }
            // In bounds: end <= d.len() and the L4 header is at least 8 bytes.
            if let Some(p) = d
                .get(L3_OFFSET + ipv4::HEADER_LEN..)
                .and_then(|l4| l4.first_chunk::<4>())
            {
                (sport, dport) = (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                );
            }
        }
    }
    let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    Some(Ok((
        FlowKey::new(src, dst, sport, dport, protocol, in_port),
        h[8],
        end,
    )))
}

/// Any IPv4 header (options, or anything the fast path leaves).
#[inline(never)]
fn parse_ipv4_general(d: &[u8], in_port: PortId) -> Result<(FlowKey, u8, usize), DropReason> {
    let ip =
        ipv4::Packet::new_checked(d.get(L3_OFFSET..).unwrap_or_default()).map_err(ipv4_error)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let protocol = ip.protocol();
    let (mut sport, mut dport) = (0, 0);
    if !ip.is_fragment() {
        let l4 = ip.payload();
        let min = match protocol {
            ipv4::protocol::UDP => udp::HEADER_LEN,
            ipv4::protocol::TCP => 20,
            _ => 0,
        };
        if min > 0 {
            if l4.len() < min {
                return Err(DropReason::L4Truncated);
            }
            if let Some((s, d)) = tcp::ports(l4) {
                (sport, dport) = (s, d);
            }
        }
    }
    let key = FlowKey::new(ip.src_u32(), ip.dst_u32(), sport, dport, protocol, in_port);
    Ok((key, ip.ttl(), L3_OFFSET + ip.total_len() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::HeapBuf;

    /// A UDP frame whose IPv4 header checksum is wrong.
    fn bad_checksum_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&28u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = ipv4::protocol::UDP;
        ip[10..12].copy_from_slice(&0xdeadu16.to_be_bytes());
        ip[12..16].copy_from_slice(&[10, 5, 1, 2]);
        ip[16..20].copy_from_slice(&[10, 5, 2, 9]);
        ip[24..26].copy_from_slice(&8u16.to_be_bytes());
        f
    }

    #[test]
    fn a_checksum_the_device_verified_is_not_computed_again() {
        let mut b = HeapBuf::from_bytes(&bad_checksum_frame());
        assert_eq!(
            parse_ipv4_checked(&mut b, 0, false).unwrap_err(),
            DropReason::Ipv4BadChecksum,
            "checked in software when the device did not"
        );
        let (key, ttl) =
            parse_ipv4_checked(&mut b, 0, true).expect("trusted when the device checked it");
        assert_eq!((key.dst, ttl), (u32::from_be_bytes([10, 5, 2, 9]), 64));
        // The inner header of a tunnel is always checked in software.
        assert!(parse_ipv4(&mut b, 0).is_err());
    }
}
