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
use crate::wire::{ethernet::ethertype, ipv4, tcp, udp, Error};

pub(crate) fn parse_burst<B: PacketBuf>(bufs: &mut [B], meta: &mut [Meta], in_port: PortId) {
    for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
        *m = parse_one(buf, in_port);
    }
}

#[inline]
fn parse_one<B: PacketBuf>(buf: &mut B, in_port: PortId) -> Meta {
    let d = buf.data();
    if d.len() < L3_OFFSET {
        return Meta::drop(DropReason::EthTruncated);
    }
    match u16::from_be_bytes([d[12], d[13]]) {
        ethertype::IPV4 => match parse_ipv4(buf, in_port) {
            Ok(key) => Meta { next: Next::L3, key, ..Meta::default() },
            Err(r) => Meta::drop(r),
        },
        ethertype::ARP => Meta { next: Next::Arp, ..Meta::default() },
        ethertype::VLAN => Meta::drop(DropReason::VlanTagged),
        _ => Meta { next: Next::NonIp, ..Meta::default() },
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
/// flow key.
#[inline]
pub(crate) fn parse_ipv4<B: PacketBuf>(buf: &mut B, in_port: PortId) -> Result<FlowKey, DropReason> {
    let (key, end) = {
        let d = buf.data();
        let ip = ipv4::Packet::new_checked(d.get(L3_OFFSET..).unwrap_or_default()).map_err(ipv4_error)?;
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
        let key = FlowKey::new(ip.src_u32(), ip.dst_u32(), sport, dport, protocol, in_port as u8);
        (key, L3_OFFSET + ip.total_len() as usize)
    };
    buf.truncate(end);
    Ok(key)
}
