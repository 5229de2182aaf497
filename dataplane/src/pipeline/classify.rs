//! Stage 2: classify by ingress port.
//!
//! - Pod port: the source MAC and IP must be the pod's (anti-spoofing); ARP
//!   requests for the gateway (or any other address in the pod network) are
//!   answered with the router MAC; IPv4 goes to L3.
//! - Host port: as a pod port without anti-spoofing, so the node's kernel
//!   reaches pods through it.
//! - Uplink: VXLAN to this node on the configured port and IPIP are
//!   decapsulated when the outer source is a known node (else dropped as an
//!   unknown tunnel source); plain IPv4 to the pod network goes to L3
//!   (host-gw) only from the node that, by this node's routes, owns the
//!   source's subnet: the source's route must be host-gw and the frame must
//!   come from that node's MAC, as flannel's host-gw routes imply. Anything
//!   else addressed to pods without encapsulation (a neighbour spoofing a
//!   pod, a tunnel-mode node, a martian source) is dropped. Everything else
//!   is the node's own traffic and goes to the host port unchanged.

use super::parse::parse_ipv4;
use super::{Meta, Next, L3_OFFSET};
use crate::buffer::PacketBuf;
use crate::counters::{DropReason, WorkerCounters};
use crate::tables::{Adjacency, PortEntry, PortId, PortRole, Tables};
use crate::wire::{arp, ethernet, ipv4, udp, vxlan, MacAddr};

pub(crate) fn classify_burst<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    entry: &PortEntry,
    bufs: &mut [B],
    meta: &mut [Meta],
    c: &WorkerCounters,
) {
    match entry.role {
        PortRole::Pod { ip, mac } => {
            for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
                classify_pod(t, in_port, ip, mac, buf, m, c);
            }
        }
        PortRole::Host { .. } => {
            for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
                classify_host(t, in_port, buf, m, c);
            }
        }
        PortRole::Uplink { ip } => {
            for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
                classify_uplink(t, in_port, entry.own_mac, ip, buf, m, c);
            }
        }
    }
}

// The MACs are copied out as whole 6-byte arrays (one check of the length,
// not six). Every caller has checked that a whole Ethernet header is there;
// a shorter frame would read as the zero MAC rather than panic.
#[inline]
fn dst_mac(d: &[u8]) -> MacAddr {
    d.first_chunk::<6>().map_or(MacAddr::ZERO, |m| MacAddr(*m))
}

/// Destination and source MACs, from one 12-byte chunk.
#[inline]
fn macs(d: &[u8]) -> (MacAddr, MacAddr) {
    // Whole 6-byte copies (one 4-byte and one 2-byte load each), not bytes.
    match d.split_first_chunk::<6>() {
        Some((dst, rest)) => (
            MacAddr(*dst),
            rest.first_chunk::<6>()
                .map_or(MacAddr::ZERO, |src| MacAddr(*src)),
        ),
        None => (MacAddr::ZERO, MacAddr::ZERO),
    }
}

/// Multicast, reserved (class E) or limited broadcast, "this network" or
/// loopback: never a unicast source or destination (RFC 1812 5.3.7).
#[inline]
pub(crate) fn is_martian(ip: u32) -> bool {
    let first = ip >> 24;
    first == 0 || first == 127 || first >= 224
}

fn classify_pod<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    pod_ip: u32,
    pod_mac: MacAddr,
    buf: &mut B,
    m: &mut Meta,
    c: &WorkerCounters,
) {
    if let Next::Drop(_) = m.next {
        return;
    }
    let (dst, src) = macs(buf.data());
    if src != pod_mac {
        m.next = Next::Drop(DropReason::SpoofedSourceMac);
        return;
    }
    match m.next {
        Next::L3 => {
            if dst != t.node.router_mac {
                m.next = Next::Drop(DropReason::NotForUs);
            } else if m.key.src != pod_ip {
                m.next = Next::Drop(DropReason::SpoofedSourceIp);
            } else if is_martian(m.key.dst) {
                m.next = Next::Drop(DropReason::Ipv4Martian);
            }
        }
        Next::Arp => {
            if !dst.is_broadcast() && dst != t.node.router_mac {
                m.next = Next::Drop(DropReason::NotForUs);
                return;
            }
            m.next = arp_reply(t, in_port, buf, Some((pod_ip, pod_mac)), c);
        }
        Next::NonIp => m.next = Next::Drop(DropReason::UnsupportedEthertype),
        _ => {}
    }
}

fn classify_host<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    buf: &mut B,
    m: &mut Meta,
    c: &WorkerCounters,
) {
    if let Next::Drop(_) = m.next {
        return;
    }
    let dst = dst_mac(buf.data());
    match m.next {
        Next::L3 => {
            if dst != t.node.router_mac {
                m.next = Next::Drop(DropReason::NotForUs);
            } else if is_martian(m.key.dst) || is_martian(m.key.src) {
                m.next = Next::Drop(DropReason::Ipv4Martian);
            }
        }
        Next::Arp => {
            if !dst.is_broadcast() && dst != t.node.router_mac {
                m.next = Next::Drop(DropReason::NotForUs);
                return;
            }
            m.next = arp_reply(t, in_port, buf, None, c);
        }
        Next::NonIp => m.next = Next::Drop(DropReason::UnsupportedEthertype),
        _ => {}
    }
}

/// Turns an ARP request into the reply in place. `pod` is the requester's
/// bound (IP, MAC) on pod ports, checked against the ARP sender fields.
fn arp_reply<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    buf: &mut B,
    pod: Option<(u32, MacAddr)>,
    c: &WorkerCounters,
) -> Next {
    let d = buf.data_mut();
    let Ok(mut a) = arp::Packet::new_checked(&mut d[L3_OFFSET..]) else {
        return Next::Drop(DropReason::ArpMalformed);
    };
    let sender_ip = u32::from(a.sender_ip());
    let sender_mac = a.sender_hw_addr();
    if let Some((ip, mac)) = pod {
        if sender_mac != mac {
            return Next::Drop(DropReason::SpoofedSourceMac);
        }
        // A duplicate-address probe (sender 0.0.0.0) is no spoof, and gets no answer.
        if sender_ip == 0 {
            return Next::Drop(DropReason::ArpIgnored);
        }
        if sender_ip != ip {
            return Next::Drop(DropReason::SpoofedSourceIp);
        }
    }
    if a.operation() != arp::operation::REQUEST || sender_ip == 0 {
        return Next::Drop(DropReason::ArpIgnored);
    }
    let target = u32::from(a.target_ip());
    // Gateway, or any other pod-network address (proxy ARP, so pods that put
    // their peers on-link still route through the switch). Never the asker's own.
    let ours = target == t.node.gateway_ip
        || (t.node.pod_network.contains_u32(target) && target != sender_ip);
    if !ours {
        return Next::Drop(DropReason::ArpNotForUs);
    }
    let router = t.node.router_mac;
    a.set_operation(arp::operation::REPLY);
    a.set_target_hw_addr(sender_mac);
    a.set_target_ip(std::net::Ipv4Addr::from(sender_ip));
    a.set_sender_hw_addr(router);
    a.set_sender_ip(std::net::Ipv4Addr::from(target));
    let mut e = ethernet::Frame::new_unchecked(&mut d[..L3_OFFSET]);
    e.set_dst_addr(sender_mac);
    e.set_src_addr(router);
    buf.truncate(L3_OFFSET + arp::PACKET_LEN);
    c.events.arp_replies.inc();
    Next::Out(in_port)
}

/// Hands a frame to the host port unchanged but for its MACs.
fn to_host_raw<B: PacketBuf>(t: &Tables, buf: &mut B, c: &WorkerCounters) -> Next {
    let Some(h) = t.host else {
        return Next::Drop(DropReason::PortDown);
    };
    let crate::tables::PortRole::Host { peer_mac } = t.ports[h as usize].role else {
        return Next::Drop(DropReason::PortDown);
    };
    let d = buf.data_mut();
    d[..6].copy_from_slice(&peer_mac.0);
    d[6..12].copy_from_slice(&t.node.router_mac.0);
    c.events.to_host.inc();
    Next::Out(h)
}

fn classify_uplink<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    own_mac: MacAddr,
    node_ip: u32,
    buf: &mut B,
    m: &mut Meta,
    c: &WorkerCounters,
) {
    if let Next::Drop(_) = m.next {
        return;
    }
    let (dst, src_mac) = macs(buf.data());
    if dst.is_unicast() && dst != own_mac {
        m.next = Next::Drop(DropReason::NotForUs);
        return;
    }
    // ARP and other protocols on the uplink belong to the node's kernel, and
    // so does link-layer broadcast or multicast IPv4: a router does not
    // forward it (RFC 1812 section 5.3.4).
    if m.next != Next::L3 || !dst.is_unicast() {
        m.next = to_host_raw(t, buf, c);
        return;
    }
    m.from_uplink = true;
    if m.key.dst == node_ip {
        m.next = match m.key.protocol {
            ipv4::protocol::UDP if m.key.dst_port == t.node.vxlan_port => {
                decap_vxlan(t, in_port, buf, m, c)
            }
            ipv4::protocol::UDP
                if first_fragment_dst_port(buf.data()) == Some(t.node.vxlan_port) =>
            {
                Next::Drop(DropReason::TunnelFragment)
            }
            ipv4::protocol::IPIP => decap_ipip(t, in_port, buf, m, c),
            _ => to_host_raw(t, buf, c),
        };
    } else if !t.node.pod_network.contains_u32(m.key.dst) {
        m.next = to_host_raw(t, buf, c);
    } else {
        m.next = host_gw_source_check(t, src_mac, m);
    }
}

/// Plain IPv4 to a pod from the uplink: accepted only from the node that
/// owns the source's subnet by a host-gw route, recognised by its MAC.
#[inline]
fn host_gw_source_check(t: &Tables, src_mac: MacAddr, m: &Meta) -> Next {
    if is_martian(m.key.src) || is_martian(m.key.dst) {
        return Next::Drop(DropReason::Ipv4Martian);
    }
    match t
        .lpm
        .lookup(m.key.src)
        .and_then(|a| t.adjacencies.get(a as usize))
    {
        Some(Adjacency::HostGw(rw)) if rw.dst_mac == src_mac => Next::L3,
        _ => Next::Drop(DropReason::HostGwSourceMismatch),
    }
}

/// The UDP destination port of a first fragment (flow keys of fragments
/// carry no ports).
fn first_fragment_dst_port(d: &[u8]) -> Option<u16> {
    let ip = ipv4::Packet::new_unchecked(&d[L3_OFFSET..]);
    if !ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    crate::wire::tcp::ports(ip.payload()).map(|(_, dport)| dport)
}

#[inline]
fn outer_is_fragment(d: &[u8]) -> bool {
    ipv4::Packet::new_unchecked(&d[L3_OFFSET..]).is_fragment()
}

fn decap_vxlan<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    buf: &mut B,
    m: &mut Meta,
    c: &WorkerCounters,
) -> Next {
    let strip = {
        let d = buf.data();
        let ip = ipv4::Packet::new_unchecked(&d[L3_OFFSET..]);
        if ip.is_fragment() {
            return Next::Drop(DropReason::TunnelFragment);
        }
        if !t.is_vxlan_peer(m.key.src) {
            return Next::Drop(DropReason::UnknownTunnelSource);
        }
        let l4 = ip.payload();
        // parse checked 8 bytes of UDP; its length field must cover VXLAN.
        let Ok(u) = udp::Packet::new_checked(l4) else {
            return Next::Drop(DropReason::VxlanTruncated);
        };
        let vx = match vxlan::Packet::new_checked(u.payload()) {
            Ok(v) => v,
            Err(crate::wire::Error::BadFlags) => return Next::Drop(DropReason::VxlanBadFlags),
            Err(_) => return Next::Drop(DropReason::VxlanTruncated),
        };
        if vx.vni() != t.node.vni {
            return Next::Drop(DropReason::VxlanUnknownVni);
        }
        let inner = vx.payload();
        if inner.len() < ethernet::HEADER_LEN {
            return Next::Drop(DropReason::VxlanInnerNotIpv4);
        }
        if u16::from_be_bytes([inner[12], inner[13]]) != ethernet::ethertype::IPV4 {
            return Next::Drop(DropReason::VxlanInnerNotIpv4);
        }
        if dst_mac(inner) != t.node.vtep_mac {
            return Next::Drop(DropReason::VxlanInnerMacMismatch);
        }
        // Trim anything past the UDP length, then strip outer headers.
        let end = L3_OFFSET + ip.header_len() + u.len() as usize;
        (
            L3_OFFSET + ip.header_len() + udp::HEADER_LEN + vxlan::HEADER_LEN,
            end,
        )
    };
    buf.truncate(strip.1);
    if !buf.adj(strip.0) {
        return Next::Drop(DropReason::VxlanTruncated);
    }
    match parse_ipv4(buf, in_port) {
        Ok((key, ttl)) => {
            c.events.vxlan_decap.inc();
            m.key = key;
            m.ttl = ttl;
            inner_checks(m)
        }
        Err(_) => Next::Drop(DropReason::InnerIpv4Malformed),
    }
}

fn decap_ipip<B: PacketBuf>(
    t: &Tables,
    in_port: PortId,
    buf: &mut B,
    m: &mut Meta,
    c: &WorkerCounters,
) -> Next {
    if outer_is_fragment(buf.data()) {
        return Next::Drop(DropReason::TunnelFragment);
    }
    if !t.is_ipip_peer(m.key.src) {
        return Next::Drop(DropReason::UnknownTunnelSource);
    }
    let hl = ipv4::Packet::new_unchecked(&buf.data()[L3_OFFSET..]).header_len();
    // The outer Ethernet header becomes scratch: forward rewrites all 14 bytes.
    if !buf.adj(hl) {
        return Next::Drop(DropReason::InnerIpv4Malformed);
    }
    match parse_ipv4(buf, in_port) {
        Ok((key, ttl)) => {
            c.events.ipip_decap.inc();
            m.key = key;
            m.ttl = ttl;
            inner_checks(m)
        }
        Err(_) => Next::Drop(DropReason::InnerIpv4Malformed),
    }
}

#[inline]
fn inner_checks(m: &Meta) -> Next {
    if is_martian(m.key.dst) || is_martian(m.key.src) {
        Next::Drop(DropReason::Ipv4Martian)
    } else {
        Next::L3
    }
}
